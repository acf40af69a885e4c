"""Intake: from a class folder to text that may leave the machine. `discover` (the class
folder, rosters, LMS downloads), `extract` and `formats` (text out of every file type, under
`limits`, in the `isolation` worker for heavy files), `visibility` (hidden text), `injection`
and `injection_patterns` (attempts to instruct the grader), `redact` (names, e-mails, ids and
phones replaced by placeholders)."""
