"""Batch grading through provider batch jobs: `submit` (with the library's entry points
and `sync` for cron), `jobs` (opening a command, sending jobs, recovering them), `collect`
(results judged and stored exactly once)."""
