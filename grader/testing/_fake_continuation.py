"""Continuation of long outputs, for models whose table row has `continuation = true`.

Gemini 4 Hydrogen and Neon end an output longer than one segment with finishReason
`CONTINUATION` and an opaque `continuationToken` on the candidate; the client sends the same
request again with that token (`continuationToken`, top level of the generateContent body, as
google-genai writes `GenerateContentConfig.continuation_token`) and gets the next segment. Each
segment is a billed reply, which is why grader turns the SDK's automatic continuation off
(facts sheet gemini-api-2026-12.md, sections 1 and 9).

The fake produces one on request: a submission containing `FAKE_GEMINI:CONTINUE` is answered in
two segments, the first half of the answer with a token, then the rest for the request that
carries it. A token is bytes on the SDK's side, base64 in JSON; the fake keeps the last
`KEPT` tokens it issued (a token may be sent again, e.g. by a retry) and refuses any other.
"""

from __future__ import annotations

import base64
import uuid

from grader.testing._fake_state import FakeState

KEPT = 1000  # continuation tokens remembered, oldest dropped first
INVALID = ("Invalid continuation_token: the fake did not issue it for this model, or has "
           "forgotten it.")


def issue(state: FakeState, model: str, rest: str) -> str:
    """A new token (base64, as the reply carries it) that continues with `rest` on `model`."""
    token = base64.b64encode(b"fake-continuation/" + uuid.uuid4().hex.encode()).decode()
    with state.lock:
        state.continuations[token] = (model, rest)
        while len(state.continuations) > KEPT:
            state.continuations.popitem(last=False)
        state.stats.continuations_offered += 1
    return token


def rest_of(state: FakeState, token: str, model: str) -> str | None:
    """The segment a request carrying `token` is answered with, or None when the token is
    unknown or was issued for another model (the API answers 400)."""
    with state.lock:
        found = state.continuations.get(token)
    return found[1] if found is not None and found[0] == model else None


def count_requested(state: FakeState) -> None:
    """Count one continuation segment delivered to a client that asked for it."""
    with state.lock:
        state.stats.continuations_requested += 1
