"""Grading: one preparation and one judgment per student, shared by every path.
`context` (what a run shares, built once), `prepare` (one student up to the request), `judge`
(validation, the re-ask, the quote check), `policy` (the pure policy: verdicts, totals by
code), `uncertainty` (samples, review flags), `selection` (reuse, skip or grade),
`exemplars` and `embeddings` (graded examples), `records` (the records the store keeps)."""
