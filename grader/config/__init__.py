"""Settings and the model table: `settings` (flag > environment > grader.toml > default,
resolved in one place), `models` (the dated, sourced Gemini model table and prices, and the day
it is read for), `generation` (the run's generation config, checked against the table before any
call)."""
