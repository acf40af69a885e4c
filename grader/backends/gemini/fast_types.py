"""google-genai request objects that the SDK converts cheaply.

The SDK turns each request into JSON with `_common.get_value_by_path`, which asks `key in obj`
before reading every field. A pydantic model has no `__contains__`, so Python answers by walking
all of the model's (name, value) pairs, which is always False for a field name; the config alone
has about 75 fields and is asked about some 60 of them, per request. These subclasses give the
same answer (False) at once, so the SDK falls through to its `getattr` branch as before.
Measured: the SDK's request conversion drops from 0.76 ms to 0.16 ms per request (the whole
grading process from 4.7 to about 4.1 ms of CPU per student at concurrency 256, fake server).

`GenerateContentConfig.__deepcopy__` is shallow: the SDK deep-copies a config object on every
call to guard against callers reusing it, and the backend builds a fresh one per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.genai import types

if TYPE_CHECKING:  # the pydantic mypy plugin writes the subclasses' signatures with this name
    from google.genai.types import PIL_Image  # noqa: F401


class _Fast:
    def __contains__(self, key: object) -> bool:
        return False  # what iterating a model's (name, value) pairs answers for a field name


class Blob(_Fast, types.Blob):
    pass


class FileData(_Fast, types.FileData):
    pass


class Part(_Fast, types.Part):
    pass


class Content(_Fast, types.Content):
    pass


class ThinkingConfig(_Fast, types.ThinkingConfig):
    pass


class AutomaticFunctionCallingConfig(_Fast, types.AutomaticFunctionCallingConfig):
    pass


class GenerateContentConfig(_Fast, types.GenerateContentConfig):
    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> GenerateContentConfig:
        return self.model_copy()  # built fresh for each request and never reused
