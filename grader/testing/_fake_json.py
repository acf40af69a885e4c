"""Request bodies as the real service reads them: proto3 JSON, both field spellings.

Google's JSON parser (proto3 JSON mapping) accepts every field name in lowerCamelCase and in the
original snake_case: `generationConfig.responseMimeType` and `generation_config.response_mime_type`
are the same field. Clients differ (google-genai sends camelCase but some nested names as they
are, LiteLLM sends `response_mime_type`), so the fake turns every model-API body into camelCase
once, at the entry point (`Call.body()`), and the rest of the fake reads one spelling only.

Values that are free-form data, not messages, keep their keys: JSON schemas (property names
are the user's), function call `args` and function `response` objects, `labels` and batch
`metadata` maps. A field given in both spellings is refused, as the real parser refuses a
duplicate field (the wording is the fake's own: Google's text is not in our sources).
"""

from __future__ import annotations

from typing import Any

# Fields whose value is user data (google.protobuf.Struct, a map, a JSON schema): renamed
# themselves, their contents never.
FREE_FORM = frozenset({
    "responseJsonSchema", "responseSchema", "parametersJsonSchema", "parameters", "args",
    "response", "labels", "metadata",
})


class DuplicateField(ValueError):
    """A field sent twice, in both spellings (the service answers 400)."""


def camel(name: str) -> str:
    """proto3 JSON's lowerCamelCase of a field name: `response_mime_type` -> `responseMimeType`
    (a name without underscores is returned as it is)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def normalise(value: Any) -> Any:
    """`value` with every message field name in camelCase, recursively, except inside
    `FREE_FORM` values; raises DuplicateField when one object names a field in both spellings."""
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    sent: dict[str, str] = {}
    for key, item in value.items():
        name = camel(str(key))
        if name in out:
            raise DuplicateField(f'Invalid JSON payload received. Duplicate field "{key}": '
                                 f'"{sent[name]}" names the same field.')
        sent[name] = str(key)
        out[name] = item if name in FREE_FORM else normalise(item)
    return out


def spelled(raw: Any, name: str) -> str | None:
    """How a raw body spelled the top-level field `name` (camelCase), or None if it has none."""
    if not isinstance(raw, dict):
        return None
    return next((str(k) for k in raw if camel(str(k)) == name), None)
