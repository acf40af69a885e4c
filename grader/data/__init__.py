"""Data files shipped with grader: the Gemini model table (models.toml) and the prompt-injection
detector's phrase patterns (injection_patterns.toml)."""
