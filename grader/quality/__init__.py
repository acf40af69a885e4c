"""Grading quality: `human` (human scores), `metrics` and `evaluation` (`grade eval`),
`calibration` and `gate` (before a full run), `comparison` (`--compare`), `score_jump` (a score
far above similar work), `tuning` (supervised tuning on Gemini Enterprise)."""
