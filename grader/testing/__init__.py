"""Test helpers shipped with the package: a fake Gemini server and its pytest fixtures.

`FakeGemini` is imported lazily so `python -m grader.testing.fake_gemini` does not import the
module twice (runpy warns about that)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grader.testing.fake_gemini import FakeGemini

__all__ = ["FakeGemini"]


def __getattr__(name: str) -> Any:
    if name == "FakeGemini":
        from grader.testing.fake_gemini import FakeGemini

        return FakeGemini
    raise AttributeError(name)
