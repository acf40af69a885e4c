"""grader: grade a class folder of submissions against a rubric with Gemini or a local model."""

__version__ = "0.1.0"
