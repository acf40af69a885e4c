"""Prompting: `rubric` (the marking scheme, validated), `prompts` (the Jinja templates,
sandboxed), `schema` (the response schema the model answers in), `request` (the one request and
response type every backend takes), `planning` (what every request of a run shares, and the
request for one student), `scaffold` (`grade init`'s assignment template)."""
