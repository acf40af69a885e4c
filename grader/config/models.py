"""The Gemini model table (`grader/data/models.toml`): lifecycle, thinking levels, limits, prices.

`table()` loads the packaged file, with the overrides from grader.toml's `[grader.models]`
merged in, validated by pydantic (every price and lifecycle entry must name its source).
`Pricing` turns one model's dated prices and a service tier into a cost per attempt: built once
per run, so costing an attempt is a date comparison and four multiplications.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grader.errors import ConfigError, format_validation_error
from grader.prompting.request import Usage

Level = Literal["minimal", "low", "medium", "high", "xhigh"]
LEVELS: tuple[Level, ...] = ("minimal", "low", "medium", "high", "xhigh")
Stage = Literal["preview", "ga", "deprecated", "retired"]
Surface = Literal["developer", "enterprise"]
Mode = Literal["standard", "flex", "batch", "priority"]
TABLE_FILE = "models.toml"
_STRICT = ConfigDict(extra="forbid", frozen=True)


class Sourced(BaseModel):
    """A row of the data table: strict, frozen, and it says where its figures come from."""

    model_config = _STRICT

    source: str = Field(min_length=1)


class Lifecycle(Sourced):
    """A model's stage on one API surface (Developer API or Enterprise/Vertex)."""

    stage: Stage
    deprecated: date | None = None
    shutdown: date | None = None
    routed_to: str | None = Field(default=None, description="what Google serves instead")
    replacement: str | None = None
    note: str = ""

    def routed(self, day: date) -> str | None:
        """The id served instead of this one on `day` (from the shutdown, else deprecation)."""
        start = self.shutdown or self.deprecated
        return self.routed_to if self.routed_to and (start is None or day >= start) else None


class LongContext(BaseModel):
    model_config = _STRICT

    above_tokens: int = Field(gt=0)
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class DatedPrice(Sourced):
    """USD per 1M input tokens from a date on, with its source."""

    model_config = ConfigDict(populate_by_name=True)

    since: date = Field(alias="from")
    input: float = Field(ge=0)


P = TypeVar("P", bound=DatedPrice)


def in_force(rows: Sequence[P], day: date) -> P | None:
    """The row of `rows` (sorted by date) in force on `day`; the first also prices earlier
    days."""
    found = rows[0] if rows else None
    for p in rows:
        if p.since <= day:
            found = p
    return found


class Price(DatedPrice):
    """USD per 1M tokens from a date on (Standard tier; output includes thinking)."""

    output: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    cache_storage_hour: float | None = Field(default=None, ge=0)
    long_context: LongContext | None = None


class Multipliers(Sourced):
    """Share of the Standard price per mode (cached input is never discounted)."""

    batch: float = Field(gt=0)
    flex: float = Field(gt=0)
    priority: float = Field(gt=0)

    def of(self, mode: Mode) -> float:
        return 1.0 if mode == "standard" else float(getattr(self, mode))


class Media(Sourced):
    """The tokens the provider counts for one image and one PDF page."""

    image_tokens: int = Field(gt=0)
    pdf_page_tokens: int = Field(gt=0)


class Inline(Sourced):
    """What one request may carry inline; larger media go through the Files API."""

    request_mb: float = Field(gt=0)
    pdf_mb: float = Field(gt=0)


class FilesApi(Sourced):
    """The Files API's retention and size limit."""

    retention_hours: float = Field(gt=0)
    reupload_after_hours: float = Field(gt=0)
    max_file_mb: float = Field(gt=0)


class EstimateAssumptions(Sourced):
    """What `grade estimate` assumes a call produces and takes (not Google figures)."""

    thinking_tokens: dict[Level, int]
    answer_tokens_per_criterion: int = Field(ge=0)
    answer_tokens_fixed: int = Field(ge=0)
    seconds_per_call: float = Field(gt=0)
    flex_minutes: tuple[float, float]
    batch_hours: float = Field(gt=0)


class EmbeddingModel(BaseModel):
    """The embedding model exemplar similarity uses (`exemplar_similarity`)."""

    model_config = _STRICT

    model: str
    released: date
    max_input_tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    dimensions: int = Field(gt=0)
    prices: tuple[DatedPrice, ...] = Field(min_length=1)  # output is not billed
    sources: tuple[str, ...] = Field(min_length=1)

    def cost(self, tokens: int, day: date) -> float:
        """USD for `tokens` input tokens embedded on `day` (the first row prices earlier days)."""
        found = in_force(sorted(self.prices, key=lambda p: p.since), day)
        assert found is not None  # at least one row
        return tokens * found.input / 1e6


class ModelInfo(BaseModel):
    """One row of the table. Unknown fields are errors; most are optional so that a grader.toml
    override can add a row for a model the table does not list (e.g. a tuned one)."""

    model_config = _STRICT

    id: str
    name: str = ""
    released: date | None = None
    thinking_levels: tuple[Level, ...] = ()
    api_default_thinking: Level | None = None
    thinking: Level | None = Field(default=None, description="what grader sends by default")
    thinking_why: str = ""
    sampling: bool = Field(default=True, description="temperature/top_p/top_k honoured")
    prefill: bool = Field(default=True, description="a conversation may end with a model turn")
    cache_min_tokens: int | None = Field(default=None, gt=0)
    explicit_cache: bool = Field(default=True, description="cachedContents accepted (Gemini 4: "
                                 "no, only implicit caching)")
    implicit_cache_min_tokens: int | None = Field(
        default=None, gt=0, description="identical prompt prefixes this long hit the provider's "
        "implicit cache")
    implicit_cache_discount: float | None = Field(
        default=None, gt=0, le=1, description="share of the input price an implicit-cache hit "
        "saves (Enterprise's figure)")
    thinking_budget: bool = Field(default=True, description="a thinkingBudget accepted (no: 400)")
    penalties: bool = Field(default=True, description="frequency/presence penalties accepted")
    max_candidates: int = Field(default=8, ge=1, description="candidateCount above it: 400")
    continuation: bool = Field(
        default=False, description="long outputs continue over billed segments (finishReason "
        "CONTINUATION and a continuationToken)")
    notice_days: int | None = Field(
        default=None, gt=0, description="the least notice Google promises before retiring it")
    office_formats: tuple[str, ...] = Field(
        default=(), description="Office/OpenDocument files read inline on Enterprise")
    max_input_tokens: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    developer: Lifecycle | None = None
    enterprise: Lifecycle | None = None
    multipliers: Multipliers | None = None
    prices: tuple[Price, ...] = ()
    sources: tuple[str, ...] = ()

    @field_validator("prices")
    @classmethod
    def _by_date(cls, prices: tuple[Price, ...]) -> tuple[Price, ...]:
        dates = [p.since for p in prices]
        if len(set(dates)) != len(dates):
            raise ValueError("two price rows start on the same date")
        return tuple(sorted(prices, key=lambda p: p.since))

    @model_validator(mode="after")
    def _levels(self) -> ModelInfo:
        for name in ("api_default_thinking", "thinking"):
            level = getattr(self, name)
            if level is not None and level not in self.thinking_levels:
                raise ValueError(f"{name} {level!r} is not one of thinking_levels")
        return self

    def lifecycle(self, surface: Surface) -> Lifecycle | None:
        return self.developer if surface == "developer" else self.enterprise

    def price_on(self, day: date) -> Price | None:
        """The row in force on `day`; the first row also prices earlier days."""
        return in_force(self.prices, day)

    def lower_level(self, level: Level | None) -> Level | None:
        """The next thinking level below `level` that this model accepts, if any."""
        if level is None or level not in self.thinking_levels:
            return None
        below = [lv for lv in self.thinking_levels if LEVELS.index(lv) < LEVELS.index(level)]
        return max(below, key=LEVELS.index) if below else None


class SpendLimits(Sourced):
    """The provider's spend-based rate limit per usage tier (USD per `window_minutes`)."""

    window_minutes: int = Field(gt=0)
    tiers: dict[Literal["1", "2", "3"], float]
    checked: date

    def line(self) -> str:
        """"Tier 1 $10, Tier 2 $50, Tier 3 $200 per 10 minutes", for messages."""
        return (", ".join(f"Tier {t} ${usd:g}" for t, usd in sorted(self.tiers.items()))
                + f" per {self.window_minutes} minutes")


class ModelTable(BaseModel):
    model_config = _STRICT

    checked: date
    default_model: str
    cheap_model: str
    default_source: str
    default_why: str = Field(min_length=1)
    multipliers: Multipliers
    media: Media
    inline: Inline
    files: FilesApi
    estimate: EstimateAssumptions
    embedding: EmbeddingModel
    spend_limits: SpendLimits
    models: dict[str, ModelInfo]

    @model_validator(mode="after")
    def _defaults_are_current(self) -> ModelTable:
        for name in (self.default_model, self.cheap_model):
            row = self.models.get(name)
            life = row.developer if row else None
            if row is None or life is None or life.stage != "ga" or life.routed_to \
                    or not row.prices:
                raise ValueError(f"{name} must be a GA, unrouted, priced row of the table")
        return self

    def get(self, model: str) -> ModelInfo | None:
        """The row for `model` ("models/" prefix and "-NNN" version suffixes tolerated)."""
        name = model.removeprefix("models/")
        row = self.models.get(name)
        if row is None and "-" in name and name.rsplit("-", 1)[1].isdigit():
            row = self.models.get(name.rsplit("-", 1)[0])
        return row

    def multipliers_for(self, model: str) -> Multipliers:
        row = self.get(model)
        return row.multipliers if row is not None and row.multipliers else self.multipliers


def _packaged_raw() -> dict[str, Any]:
    text = resources.files("grader.data").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _with_ids(raw: dict[str, Any]) -> dict[str, Any]:
    models = {k: {**v, "id": k} for k, v in raw.get("models", {}).items()}
    return {**raw, "models": models}


@functools.cache
def packaged() -> ModelTable:
    """The table as shipped (no overrides)."""
    return ModelTable.model_validate(_with_ids(_packaged_raw()))


def table(overrides: Mapping[str, Mapping[str, Any]] | None = None, *,
          path: str = "grader.toml") -> ModelTable:
    """The packaged table with grader.toml's `[grader.models."<id>"]` overrides merged in: each
    key of an override replaces that field of the row (or starts a new row). `path`: the file
    the overrides came from, named in an error about them."""
    if not overrides:
        return packaged()
    raw = _packaged_raw()
    models = dict(raw.get("models", {}))
    for model, fields in overrides.items():
        if not isinstance(fields, Mapping):
            raise ConfigError(f"models.{model} must be a table of fields", path=path,
                              fix=f'write it as [grader.models."{model}"] with key = value lines')
        models[model] = {**models.get(model, {}), **fields}
    try:
        return ModelTable.model_validate(_with_ids({**raw, "models": models}))
    except ValidationError as e:
        raise ConfigError(
            "invalid model table override:\n" + format_validation_error(e), path=path,
            fix="correct [grader.models] (docs/model-table.md); every price "
            "row needs from, input, output, cached_input and a source") from None


TODAY_ENV = "GRADER_TODAY"
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def today() -> date:
    """The day the model table is read for (lifecycle, routing, prices): `GRADER_TODAY`
    (YYYY-MM-DD) when it is set, else today's date in UTC. grader and the fake server both ask
    this one function, so setting the variable moves both to the same day."""
    return today_override() or datetime.now(UTC).date()


def today_override() -> date | None:
    """The day `GRADER_TODAY` sets, or None when it is unset or empty."""
    raw = os.environ.get(TODAY_ENV, "").strip()
    if not raw:
        return None
    try:
        if not _ISO_DAY.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"{TODAY_ENV}={raw!r} is not a date", path="environment",
            fix=f"write it as YYYY-MM-DD (e.g. {TODAY_ENV}=2027-01-02), or unset it to use "
            "today's date") from None


class Pricing:
    """One model's prices in one mode, for one run. `cost()` and `worst_case()` return None when
    the table has no price for the model (the cost is then shown as unknown, never guessed)."""

    def __init__(self, row: ModelInfo | None, mode: Mode, multipliers: Multipliers):
        self.row = row
        self.mode = mode
        self.factor = multipliers.of(mode)
        self._rates: dict[date, tuple[float, float, float, LongContext | None] | None] = {}

    @classmethod
    def of(cls, tbl: ModelTable, model: str, mode: Mode = "standard") -> Pricing:
        return cls(tbl.get(model), mode, tbl.multipliers_for(model))

    @classmethod
    def of_server(cls, tbl: ModelTable, overrides: Mapping[str, Any] | None,
                  model: str) -> Pricing:
        """A model on a school's own server (`--backend openai`): priced only by the price rows
        grader.toml gives under `[grader.models."<model>"]`, the name exactly as passed to
        --model (a packaged Gemini row of the same name never prices it); without them the
        model is unpriced (`known` False: "local, unpriced"). A server has one tier."""
        return cls(tbl.models.get(model) if model in (overrides or {}) else None, "standard",
                   tbl.multipliers)

    @property
    def known(self) -> bool:
        return self.row is not None and bool(self.row.prices)

    def _on(self, day: date) -> tuple[float, float, float, LongContext | None] | None:
        if day not in self._rates:
            p = self.row.price_on(day) if self.row is not None else None
            self._rates[day] = None if p is None else (
                p.input * self.factor / 1e6, p.output * self.factor / 1e6,
                p.cached_input / 1e6, p.long_context)
        return self._rates[day]

    def price(self, day: date) -> Price | None:
        return self.row.price_on(day) if self.row is not None else None

    def cost(self, usage: Usage, day: date) -> float | None:
        """USD for one call: fresh input (prompt - cached) + cached input + output incl.
        thinking, at the prices in force on `day` in this mode."""
        rates = self._on(day)
        if rates is None:
            return None
        inp, out, cached, long = rates
        if long is not None and usage.prompt_tokens > long.above_tokens:
            inp, out = long.input * self.factor / 1e6, long.output * self.factor / 1e6
        fresh = max(usage.prompt_tokens - usage.cached_tokens, 0)
        return (fresh * inp + usage.cached_tokens * cached
                + (usage.output_tokens + usage.thinking_tokens) * out)

    def cache_create(self, tokens: int, day: date) -> float | None:
        """USD to create an explicit cache of `tokens` tokens: billed once as input at the
        Standard price (Agent Platform says so; the Developer API pages do not say, so grader
        assumes the same rather than nothing)."""
        p = self.price(day)
        return None if p is None else tokens * p.input / 1e6

    def cache_storage_per_hour(self, tokens: int, day: date) -> float | None:
        """USD an hour to keep an explicit cache of `tokens` tokens (None: no storage price)."""
        p = self.price(day)
        if p is None or p.cache_storage_hour is None:
            return None
        return tokens * p.cache_storage_hour / 1e6

    def worst_case(self, input_tokens: int, max_output_tokens: int, day: date) -> float | None:
        """The most one call can cost: every input token fresh, the whole output cap used."""
        return self.cost(Usage(prompt_tokens=input_tokens, output_tokens=max_output_tokens), day)
