"""Online grading: `pipeline` (open a run, close it), `runner` (one student's calls and
the schedule), `ledger` (every call paid at most once), `sending` with `caching` and `files`
(context caches and uploads), `budget` and `ratelimit` (money and quota), `estimate` and
`dry_run` (the previews)."""
