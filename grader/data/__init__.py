"""Data files shipped with grader: the Gemini model table (models.toml)."""
