"""`grade models`: the model table as a teacher or coordinator needs it, and a check of the table
against what the service lists.

`catalog()` turns the table's rows into one line per model on a given day and API surface: its
stage, its price that day and at its next change, the notice Google promises, thinking levels
and the level grader sends, and how it caches. `compare()` (pure) sets the ids a service lists
beside the table's: ids the service lists that the table lacks (a new model: the table is stale)
and rows the service no longer lists (retired early, or renamed). The listing itself comes from a
backend that can list models (`grader.backends.ListsModels`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from grader.config.models import ModelInfo, ModelTable, Price, Surface
from grader.config.settings import Settings


@dataclass(frozen=True)
class ModelLine:
    """One model as `grade models` shows it."""

    id: str
    name: str
    stage: str  # "ga", "preview", "deprecated", "retired", "shut down", "not listed"
    price: Price | None
    next_price: Price | None
    notice_days: int | None
    levels: tuple[str, ...]
    sends: str | None  # the thinking level grader sends
    api_default: str | None
    caching: str
    default: str = ""  # "default" / "cheap" when the table names it so


def _stage(row: ModelInfo, surface: Surface, day: date) -> str:
    life = row.lifecycle(surface)
    if life is None:
        return "not listed"
    if life.shutdown is not None and day >= life.shutdown:
        return f"shut down {life.shutdown}" + (f" (served as {life.routed_to})"
                                               if life.routed_to else "")
    out: str = life.stage
    if life.shutdown is not None:
        out += f", shuts down {life.shutdown}"
    return out


def _caching(row: ModelInfo) -> str:
    if row.explicit_cache:
        return (f"explicit, from {row.cache_min_tokens:,} tokens" if row.cache_min_tokens
                else "explicit")
    if row.implicit_cache_min_tokens:
        off = (f", {row.implicit_cache_discount:.0%} off on Enterprise"
               if row.implicit_cache_discount else "")
        return f"implicit only, from {row.implicit_cache_min_tokens:,} tokens{off}"
    return "implicit only"


def catalog(tbl: ModelTable, surface: Surface, day: date) -> list[ModelLine]:
    """Every row of the table on `day`, the default and the cheap model first."""
    marks = {tbl.default_model: "default", tbl.cheap_model: "cheap"}
    out = []
    for row in tbl.models.values():
        out.append(ModelLine(
            id=row.id, name=row.name, stage=_stage(row, surface, day),
            price=row.price_on(day),
            next_price=next((p for p in row.prices if p.since > day), None),
            notice_days=row.notice_days, levels=row.thinking_levels, sends=row.thinking,
            api_default=row.api_default_thinking, caching=_caching(row),
            default=marks.get(row.id, "")))
    return sorted(out, key=lambda m: (m.default != "default", m.default != "cheap", m.id))


def _usd(p: Price) -> str:
    return f"${p.input:.2f} / ${p.output:.2f}"


def render(lines: list[ModelLine], tbl: ModelTable, surface: Surface, day: date) -> str:
    """The catalog as text: one block per model."""
    where = "Developer API" if surface == "developer" else "Gemini Enterprise"
    out = [f"the model table on {day} ({where}; checked {tbl.checked}; prices USD per 1M "
           "input / output tokens, Standard tier, output includes thinking)", ""]
    for m in lines:
        mark = f"  [{m.default}]" if m.default else ""
        out.append(f"{m.id}{mark}  {m.name}")
        out.append(f"  status    {m.stage}"
                   + (f"; Google promises {m.notice_days} days' notice before retiring it"
                      if m.notice_days else ""))
        price = f"{_usd(m.price)} since {m.price.since}" if m.price else "unknown"
        if m.next_price is not None:
            price += f"; {_usd(m.next_price)} from {m.next_price.since}"
        out.append(f"  price     {price}")
        if m.levels:
            out.append(f"  thinking  {', '.join(m.levels)}; grader sends {m.sends or '-'} "
                       f"(the API's default: {m.api_default or '-'})")
        out.append(f"  caching   {m.caching}")
    out += ["", f"default: {tbl.default_model} — {tbl.default_why}",
            f"source: {tbl.default_source}"]
    return "\n".join(out)


@dataclass
class TableCheck:
    """The table beside what the service lists (see the module docstring)."""

    listed: int
    missing: list[str] = field(default_factory=list)  # listed by the service, not in the table
    gone: list[str] = field(default_factory=list)  # in the table (not shut down), not listed

    @property
    def stale(self) -> bool:
        return bool(self.missing or self.gone)


def _is_generative(model_id: str) -> bool:
    """The ids `grade models --check` compares: Gemini text models, not embeddings, images,
    audio or tuned endpoints."""
    return model_id.startswith("gemini-") and not any(
        w in model_id for w in ("embedding", "image", "tts", "audio", "live"))


def compare(listed: Iterable[str], tbl: ModelTable, surface: Surface, day: date) -> TableCheck:
    """Pure: `listed` ids (with or without a "models/" or publisher prefix) beside the table."""
    ids = {x.rsplit("/", 1)[-1] for x in listed}
    ours = {m for m in ids if _is_generative(m)}
    check = TableCheck(listed=len(ours))
    check.missing = sorted(m for m in ours if tbl.get(m) is None)
    for row in tbl.models.values():
        life = row.lifecycle(surface)
        if life is None or (life.shutdown is not None and day >= life.shutdown):
            continue
        if row.id not in ids:
            check.gone.append(row.id)
    check.gone.sort()
    return check


def render_check(c: TableCheck, tbl: ModelTable) -> str:
    lines = [f"the service lists {c.listed} Gemini models; the table was checked {tbl.checked}"]
    if c.missing:
        lines.append("listed by the service, not in the table (new models: the table is "
                     "stale): " + ", ".join(c.missing))
    if c.gone:
        lines.append("in the table, no longer listed by the service (retired or renamed: do "
                     "not choose them): " + ", ".join(c.gone))
    if not c.stale:
        lines.append("the table and the service agree")
    else:
        lines.append('fix: update grader (or add a row under [grader.models."<id>"] in '
                     "grader.toml); a model the service no longer lists fails every request")
    return "\n".join(lines)


def check_table(settings: Settings, backend: str, tbl: ModelTable, day: date) -> TableCheck:
    """`grade models --check`: ask the service which models it lists (one `models.list`) and
    compare them with the table."""
    import asyncio

    from grader.backends import ListsModels, create
    from grader.errors import ConfigError

    made = create(backend, settings=settings)

    async def listed() -> list[str]:
        try:
            if not isinstance(made, ListsModels):
                raise ConfigError(f"--check: the {backend} backend cannot list models",
                                  fix="use --backend gemini or --backend enterprise")
            return await made.list_models()
        finally:
            await made.aclose()

    surface: Surface = "enterprise" if backend in ("enterprise", "vertex") else "developer"
    return compare(asyncio.run(listed()), tbl, surface, day)
