"""The generation config of a run, checked against the model table before any call.

`configure()` turns settings and the model table into one `Generation` per run: the thinking
level (the user's, else the table's default for the model), the output cap, sampling parameters
only when the user set them, and the notices the run prints once (deprecated or routed model,
sampling the model ignores, a model the table does not know). A thinking level the model refuses,
or an output cap above its limit, is a `ConfigError` here, before anything is sent.
`served_notice()` says, once per run, when a reply came from another model than the one asked
for or from a deprecated one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

from grader.config.models import (
    LEVELS,
    TODAY_ENV,
    Level,
    ModelInfo,
    ModelTable,
    Pricing,
    Surface,
    today,
    today_override,
)
from grader.config.settings import Settings, redacting, server_url
from grader.errors import ConfigError

SAMPLING = ("temperature", "top_p")
# Stages the service reports that deserve a word (google.genai.types.ModelStage).
_OLD_STAGES = frozenset({"LEGACY", "DEPRECATED", "RETIRED"})


@dataclass(frozen=True)
class Generation:
    """Everything fixed per run about how the model is asked."""

    model: str
    row: ModelInfo | None
    surface: Surface | None  # None: a local model
    max_output_tokens: int
    thinking_level: Level | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    notices: tuple[str, ...] = ()
    server: bool = False  # a school's own model server: priced only by grader.toml


def surface_of(backend: str) -> Surface | None:
    if backend == "gemini":
        return "developer"
    if backend in ("vertex", "enterprise"):
        return "enterprise"
    return None


def configure(settings: Settings, model: str, backend: str, tbl: ModelTable,
              day: date | None = None) -> Generation:
    """The run's generation config; raises ConfigError for what the model would refuse."""
    surface = surface_of(backend)
    if surface is None:  # llama.cpp or a school's server: no table, no thinking
        return Generation(model=model, row=None, surface=None,
                          max_output_tokens=settings.max_output_tokens,
                          temperature=settings.temperature, top_p=settings.top_p,
                          seed=settings.seed, server=backend == "openai",
                          notices=server_notices(settings, model, tbl, day or today())
                          if backend == "openai" else ())
    row = tbl.get(model)
    level = settings.thinking or (row.thinking if row else None)
    notices: list[str] = []
    moved = today_override() if day is None else None
    if moved is not None:
        notices.append(f"the model table (prices, lifecycle, routing) is read as of {moved}, "
                       f"set by {TODAY_ENV}; unset it to use today's date")
    if row is None:
        notices.append(
            f"{model} is not in the model table (checked {tbl.checked}): its thinking levels, "
            "lifecycle and price are not checked, and its cost shows as unknown; add it under "
            f'[grader.models."{model}"] in grader.toml')
    else:
        _check_thinking(row, settings.thinking)
        if row.max_output_tokens and settings.max_output_tokens > row.max_output_tokens:
            raise ConfigError(
                f"--max-output-tokens {settings.max_output_tokens} is above {model}'s output "
                f"limit of {row.max_output_tokens} tokens (model table)",
                fix=f"use --max-output-tokens {row.max_output_tokens} or less")
        notices += caching_notices(row, settings)
        notices += lifecycle_notices(row, surface, day or today())
        notices += change_notices(row, surface, day or today())
        notices += sampling_notices(row, settings)
    return Generation(model=model, row=row, surface=surface,
                      max_output_tokens=settings.max_output_tokens, thinking_level=level,
                      temperature=settings.temperature, top_p=settings.top_p,
                      seed=settings.seed, notices=tuple(notices))


def server_notices(settings: Settings, model: str, tbl: ModelTable,
                   day: date) -> tuple[str, ...]:
    """A run on a school's own server (`--backend openai`): refused before any call without a
    server address or a model name; otherwise it says once where the students' work goes, and
    whether its calls are priced (a price row in grader.toml) or local, unpriced."""
    url = server_url(settings)
    if not settings.model:
        raise ConfigError(
            "--backend openai needs the name of the model the server should use",
            fix=f"pass --model NAME (the server lists its models at {url}/models), or set model "
            "in grader.toml")
    host = urlsplit(url).netloc
    how = ("names, e-mails and ids replaced by placeholders" if redacting(settings, "openai")
           else "unredacted (--no-redact)")
    price = Pricing.of_server(tbl, settings.models, model).price(day)
    cost = (f"costs are counted at the price set in grader.toml (${price.input:g} input, "
            f"${price.output:g} output per 1M tokens)" if price is not None else
            "costs are not counted (local, unpriced)")
    return (f"students' work is sent to the model server at {host} ({model}), {how}; {cost}",)


def _check_thinking(row: ModelInfo, level: Level | None) -> None:
    if level is None:
        return
    if not row.thinking_levels:
        raise ConfigError(
            f"{row.id} takes no thinking level (model table: {row.thinking_why or 'none listed'})",
            fix="leave --thinking unset for this model, or choose a Gemini 3 model with --model")
    if level not in row.thinking_levels:
        allowed = ", ".join(row.thinking_levels)
        lowest = min(row.thinking_levels, key=LEVELS.index)
        raise ConfigError(
            f"{row.id} does not accept thinking level {level!r} (allowed: {allowed}); the API "
            "would refuse every request with a 400",
            fix=f"use --thinking {lowest} (the lowest it accepts), or a model that offers "
            f"{level}, e.g. --model gemini-3.5-flash-lite")


def caching_notices(row: ModelInfo, settings: Settings) -> list[str]:
    """A model without explicit caching: `--cache on` is refused before any call; otherwise
    the run creates no cache and says once what happens instead."""
    if row.explicit_cache or settings.cache == "off":
        return []
    implicit = (f" (identical prefixes of {row.implicit_cache_min_tokens:,} tokens or more)"
                if row.implicit_cache_min_tokens else "")
    if settings.cache == "on":
        raise ConfigError(
            f"--cache on: {row.id} has no explicit context cache (cachedContents); it caches "
            f"only implicitly{implicit}", fix="use --cache auto (the marking scheme then goes "
            "first and byte-identical in every request, so Google's implicit cache can serve "
            "it), or a model with explicit caching, e.g. --model gemini-3.8-flash")
    return [f"{row.id} has no explicit context cache: none is created. The marking scheme goes "
            "first and byte-identical in every request, so Google's implicit cache may serve "
            f"it{implicit}; the summary shows the cached tokens the replies report, and "
            "`grade estimate` counts no saving"]


# A change of price or a shutdown this close is said once at the start of a run.
CHANGE_NOTICE_DAYS = 30


def change_notices(row: ModelInfo, surface: Surface, day: date) -> list[str]:
    """The model retires or changes price within `CHANGE_NOTICE_DAYS`, or Google promises
    little notice before retiring it (`notice_days`)."""
    out = []
    life = row.lifecycle(surface)
    if life is not None and life.shutdown and day <= life.shutdown \
            and (life.shutdown - day).days <= CHANGE_NOTICE_DAYS:
        out.append(f"{row.id} shuts down on {life.shutdown}, in {(life.shutdown - day).days} "
                   "days: grade before then, or choose its successor with --model")
    now, later = row.price_on(day), next((p for p in row.prices if p.since > day), None)
    if now is not None and later is not None \
            and (later.since - day).days <= CHANGE_NOTICE_DAYS:
        out.append(f"{row.id}'s price changes on {later.since}, in {(later.since - day).days} "
                   f"days: ${now.input:g} / ${now.output:g} per 1M input / output tokens now, "
                   f"${later.input:g} / ${later.output:g} from then (model table)")
    if row.notice_days is not None:
        out.append(f"{row.id} is a short-term GA: Google promises only {row.notice_days} days' "
                   "notice before retiring it; `grade models --check` compares the model table "
                   "with what the service lists")
    return out


def lifecycle_notices(row: ModelInfo, surface: Surface, day: date) -> list[str]:
    """What the table says about the model's stage on this API surface."""
    where = "the Developer API" if surface == "developer" else "Gemini Enterprise (Vertex AI)"
    life = row.lifecycle(surface)
    if life is None:
        return [f"{row.id} is not listed for {where} in the model table; its lifecycle is not "
                "checked there"]
    out = []
    routed = life.routed(day)
    instead = f"; use --model {life.replacement}" if life.replacement else ""
    if routed:
        out.append(f"{row.id} is deprecated on {where}: Google silently serves {routed} instead "
                   f"(its answers differ from the model you asked for){instead}")
    elif life.stage in ("deprecated", "retired"):
        out.append(f"{row.id} is {life.stage} on {where}{instead}")
    elif life.stage == "preview":
        out.append(f"{row.id} is a preview model on {where}: it may change or go away without "
                   "the usual notice")
    if life.shutdown and not routed and life.stage != "retired":
        out.append(f"{row.id} shuts down on {where} on {life.shutdown}{instead}")
    return out


def sampling_notices(row: ModelInfo, settings: Settings) -> list[str]:
    out = []
    given = [name for name in SAMPLING if getattr(settings, name) is not None]
    if given and not row.sampling:
        out.append(f"{row.id} ignores {' and '.join(given)} (deprecated sampling parameters "
                   "since 2026-07-21); they are sent as you asked but change nothing")
    elif settings.temperature is not None and settings.temperature < 1.0 and row.thinking_levels:
        out.append(f"temperature {settings.temperature:g} on a Gemini 3 model: Google advises "
                   "keeping the default 1.0; lower values can cause looping or worse answers")
    if settings.seed is not None:
        out.append("seed is best effort on Gemini: the same seed does not guarantee the same "
                   "grades")
    return out


def served_notice(asked: str, version: str | None, status: str | None) -> str | None:
    """A reply came from another model than `asked`, or from one in an old lifecycle stage."""
    routed = bool(version) and not str(version).removeprefix("models/").startswith(asked)
    old = status is not None and status.upper() in _OLD_STAGES
    if not routed and not old:
        return None
    parts = []
    if routed:
        parts.append(f"asked for {asked}, the service answered with {version}")
    if old and status is not None:
        parts.append(f"it reports the model as {status.upper()}")
    return "; ".join(parts)
