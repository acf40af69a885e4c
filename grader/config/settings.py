"""Settings resolve in one place: flag > environment > grader.toml > default.

`resolve()` is the only function that reads `grader.toml` or `GRADER_*` variables; everything else
receives a validated `Settings`. Credentials are never stored here in clear text beyond a SecretStr,
and never written to the store or logs.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from grader.config.models import Level, packaged, table
from grader.errors import ConfigError, RubricError
from grader.intake.limits import DEFAULT_LIMITS, MB, Limits

# The default model is the model table's (grader/data/models.toml): a current GA Flash model.
DEFAULT_GEMINI_MODEL = packaged().default_model
CONFIG_FILE = "grader.toml"
ENV_PREFIX = "GRADER_"
RUBRIC_NAMES = ("rubric.yaml", "rubric.yml")
DEFAULT_DB_NAME = ".grader/grader.sqlite"


class Settings(BaseModel):
    """Everything a run needs. Field names are the flag names with '-' -> '_'."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to grade
    rubric: Path | None = Field(
        default=None, description="the marking scheme (YAML); None = rubric.yaml in the class "
        "folder")
    prompts: Path | None = Field(default=None, description="folder overriding prompts/ templates")
    roster: Path | None = Field(
        default=None, description="roster CSV (id, name, email, ...); None = roster.csv in the "
        "class folder")
    out: Path | None = Field(
        default=None, description="output folder; None = reports/<class folder name>")
    db: Path | None = Field(
        default=None, description="the SQLite store; None = CLASS_DIR/.grader/grader.sqlite")
    handouts: Literal["reviewed", "all"] = Field(
        default="reviewed", description="which handouts (handouts/, the pages for students) "
        "the reports include: reviewed = grades a teacher reviewed or approved; all = every "
        "grade that may leave, those not reviewed stamped \"not yet reviewed\"")
    limit: int | None = Field(default=None, ge=1, description="only the first N students")
    regrade: bool = Field(
        default=False, description="ask the model again even where a grade is stored (resumable)")
    only: tuple[str, ...] | None = Field(
        default=None, description="grade only these student ids; the others keep their grade")
    retry_flagged: tuple[str, ...] | None = Field(
        default=None, description="grade flagged students again (only these flag reasons, "
        "when given)")
    dry_run: bool = Field(default=False, description="render the first prompts; call no model")
    wait: bool = Field(default=True, description="wait for another run on the same store")
    force: bool = Field(default=False, description="run even though the class's calibration "
                        "is below calibration_min_qwk")

    # grading quality: samples, review flags, calibration
    samples: int = Field(default=1, ge=1, le=20, description="grade each student this many "
                         "times; the score per criterion is the median")
    max_spread: float = Field(
        default=0.25, ge=0, le=1, description="flag a student for review when a criterion's "
        "samples differ by more than this share of its maximum")
    quote_similarity: float = Field(
        default=90.0, ge=0, le=100, description="percent similarity an evidence quote needs "
        "to count as found in the submission when it is not verbatim")
    exemplars: int = Field(
        default=0, ge=0, le=20, description="put this many graded examples, the most similar "
        "to the student's work, into each prompt (0 = none; the rubric's examples then stay "
        "in the marking scheme)")
    exemplar_db: Path | None = Field(
        default=None, description="the store whose teacher-reviewed grades form the example "
        "bank (e.g. last year's class); None = the run's own store")
    exemplar_similarity: Literal["auto", "tfidf", "embeddings"] = Field(
        default="auto", description="how examples are compared with the student's work: TF-IDF "
        "on this machine, or Gemini embeddings of the redacted texts (billed); auto = "
        "embeddings when the run's backend can embed (Gemini, Enterprise), else TF-IDF")
    exemplars_same_run: bool = Field(
        default=False, description="let students graded in this run serve as examples for "
        "their classmates (never for themselves or an identical submission)")
    group_similarity: float = Field(
        default=0.6, ge=0, le=1, description="answers whose TF-IDF cosine similarity with a "
        "group's centre is at least this join the group (review.xlsx's Groups sheet, the "
        "calibration sample); byte-identical answers always share one")
    group_max_gap: float = Field(
        default=0.25, ge=0, le=1, description="flag a student inconsistent_with_group when "
        "the AI's total differs from the median of the student's answer group by more than "
        "this share of the maximum")
    calibration_min_qwk: float = Field(
        default=0.6, ge=-1, le=1, description="grade run refuses a class whose calibration has "
        "a criterion below this quadratic weighted kappa (without --force)")

    # which model
    backend: str | None = Field(
        default=None, description="gemini | enterprise (or vertex) | local | openai (a model "
        "server of the school's own, at base_url); None = auto")
    model: str | None = Field(default=None, description="None = the backend's default model")
    thinking: Level | None = Field(
        default=None, description="thinking level; None = the model table's default for the model")
    # Sampling is sent only when set: Gemini 3.6+ ignores it, and Google advises against
    # temperatures below 1.0 on the Gemini 3 models that still honour it.
    temperature: float | None = Field(default=None, ge=0, le=2,
                                      description="sampling temperature; unset = not sent")
    top_p: float | None = Field(default=None, ge=0, le=1,
                                description="nucleus sampling; unset = not sent")
    seed: int | None = Field(
        default=None, description="sampling seed, best effort; unset = not sent")
    max_output_tokens: int = Field(default=8192, ge=64,
        description="output token cap per request (thinking counts against it)")
    # Privacy: false sends `store: false` with every Developer API request, so Google does not
    # keep them in its request logs (on by default for projects created since 2026-10-26).
    store: bool = Field(
        default=False, description="let Google keep the requests in its request logs (false: "
        "`store: false` is sent)")
    tier: Literal["standard", "flex"] = Field(
        default="standard", description="service tier: flex is half price, minutes of queueing")
    cache: Literal["auto", "on", "off"] = Field(
        default="auto", description="explicit context cache of the marking scheme: auto = when "
        "it reaches the model's minimum size; on = required (an error when it cannot be used); "
        "off = never (implicit caching still applies)")
    cache_ttl_s: float | None = Field(
        default=None, gt=0, description="how long the cache lives before it is extended; "
        "None = sized from the expected run time")
    models: dict[str, dict[str, Any]] | None = Field(
        default=None, description="[grader.models.\"<id>\"] overrides of the model table")

    # cost
    budget: float | None = Field(default=None, gt=0, description="USD this run may spend")
    spend_per_10min: float | None = Field(
        default=None, gt=0, description="USD per rolling 10 minutes (your tier's spend limit)")
    usage_tier: Literal["1", "2", "3"] | None = Field(
        default=None, description="your Gemini API usage tier (AI Studio, Billing): when "
        "spend_per_10min is not set, the run keeps below the tier's spend limit from the model "
        "table (Tier 1: $10 per 10 minutes)")

    # throughput and robustness
    concurrency: int | None = Field(
        default=None, ge=1, le=1024,  # 1024: grader.online.ratelimit.MAX_IN_FLIGHT
        description="a cap on requests in flight at once; by default as many as the quota "
        "windows allow (Gemini: up to 1,024, fewer after a 429; the local model: 8)")
    rpm: int | None = Field(default=None, ge=1,
        description="client-side quota: requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="client-side quota: tokens per minute")
    timeout_s: float = Field(default=120.0, gt=0,
        description="seconds per request before it is retried")
    flex_timeout_s: float = Field(
        default=900.0, gt=0, description="per request with --tier flex (it queues for minutes)")
    max_retries: int = Field(default=6, ge=0, description="retries per request on transient errors")
    max_connection_failures: int = Field(
        default=5, ge=1, description="connection failures in a row that stop the run")
    max_file_mb: float = Field(default=20.0, gt=0,
        description="largest file read; larger ones flag the student `oversized`")
    max_request_mb: float = Field(
        default=20.0, gt=0, description="everything sent for one student (media base64)")
    extract_timeout_s: float = Field(
        default=120.0, gt=0, description="wall-clock seconds to read one student's files")
    extract_memory_mb: int = Field(
        default=1024, ge=64, description="memory of the process that reads PDFs, Word, notebooks")
    redact: bool | None = Field(
        default=None, description="replace student names, e-mails, ids and phone numbers by "
        "placeholders before anything is sent; None = on for every backend but local")
    injection_check: bool = Field(
        default=False, description="before grading, ask the model whether each submission "
        "tries to steer its grade (one small call per distinct text, paid once, within "
        "--budget); the phrase patterns run either way")
    phone_region: str = Field(
        default="US", pattern=r"^[A-Z]{2}$",
        description="country whose national phone-number format redaction recognises")

    # Gemini / Vertex (the SDK reads its own env vars too; these are overrides)
    api_key: SecretStr | None = Field(
        default=None, description="Gemini API key; unset = GEMINI_API_KEY or GOOGLE_API_KEY "
        "(never stored or logged)")
    base_url: str | None = Field(
        default=None, description="the model server's /v1 root for --backend openai (e.g. "
        "http://localhost:11434/v1); for Gemini, an API endpoint override "
        "(GOOGLE_GEMINI_BASE_URL)")
    vertexai: bool | None = Field(
        default=None, description="use Gemini Enterprise (Vertex AI); unset = "
        "GOOGLE_GENAI_USE_ENTERPRISE / "
        "GOOGLE_GENAI_USE_VERTEXAI")
    project: str | None = Field(
        default=None, description="Google Cloud project (Enterprise); unset = GOOGLE_CLOUD_PROJECT")
    location: str | None = Field(
        default=None, description="Google Cloud location (Enterprise); unset = "
        "GOOGLE_CLOUD_LOCATION, else global")
    staging_bucket: str | None = Field(
        default=None, pattern=r"^(gs://)?[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$",
        description="Enterprise/Vertex: gs://BUCKET[/PREFIX] for files too large to send inline "
        "(reference files, large student PDFs)")

    # batch jobs (grade batch ...)
    batch_mode: Literal["auto", "inline", "file"] = Field(
        default="auto", description="Developer API batch input: inline requests while the job "
        "stays under batch_inline_mb, else a JSONL file through the Files API")
    batch_inline_mb: float = Field(
        default=20.0, gt=0, description="largest inline batch job (Google: under 20 MB)")
    batch_max_requests: int = Field(
        default=100_000, ge=1, description="requests per batch job (Enterprise allows 200,000)")
    batch_max_tokens: int = Field(
        default=3_000_000, ge=1, description="estimated input tokens per batch job; keep it at "
        "or below your tier's enqueued-token limit (Tier 1, 3.x Flash: 3,000,000)")
    batch_reask: Literal["batch", "online"] = Field(
        default="batch", description="an answer that needs the one re-ask: sent in a second, "
        "small batch round, or at once as an online call (online price) by the same collect")
    batch_poll_s: float = Field(
        default=30.0, gt=0, description="first wait of `grade batch collect --wait` between "
        "polls (it grows by half each time, up to 10 minutes)")

    # openai: a model server of the school's own with an OpenAI-compatible API
    openai_api_key: SecretStr | None = Field(
        default=None, description="key sent to the --backend openai server, for a server that "
        "asks for one; unset = OPENAI_API_KEY (never stored or logged)")
    server_slots: int = Field(
        default=4, ge=1, le=1024, description="requests --backend openai keeps in flight: the "
        "server's parallel slots (llama-server --parallel, Ollama OLLAMA_NUM_PARALLEL); "
        "--concurrency, when set, wins")
    response_format: Literal["json_schema", "json_object"] = Field(
        default="json_schema", description="how --backend openai asks for the grade's JSON: "
        "json_schema (the OpenAI standard: llama-server, vLLM, Ollama, LM Studio) or json_object "
        "with a schema (llama-cpp-python's server)")
    model_reads_images: bool = Field(
        default=False, description="the --backend openai model reads images (a vision model): "
        "images are sent to it as data URLs; otherwise it gets a note and the grade is marked "
        "for review")

    # local (llama.cpp)
    model_path: Path | None = Field(
        default=None, description="GGUF file for the local backend; unset = the bundled model")
    n_ctx: int = Field(default=8192, ge=512,
        description="context size of the local model, in tokens")
    n_threads: int | None = Field(default=None, ge=1,
        description="CPU threads of the local model; unset = llama.cpp's default")

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, v: str | None) -> str | None:
        """An address is printed (where the work goes) and stored with the run: a user name or
        password in it would be too."""
        if v is not None and _without_userinfo(v.strip()) != v.strip():
            raise ValueError(
                "the address carries a user name or password (user:password@host), which "
                "would be shown and stored with the run: give the address without it, and the "
                "server's key in OPENAI_API_KEY (or openai_api_key in grader.toml)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _tier_spend_limit(cls, data: Any) -> Any:
        """`usage_tier` sets `spend_per_10min` to the tier's limit (the model table's
        `[spend_limits]`) when it is not set itself: resolved here, once, for every use."""
        if isinstance(data, dict) and data.get("usage_tier") is not None \
                and data.get("spend_per_10min") is None:
            tiers: dict[str, float] = {str(k): v for k, v in
                                       packaged().spend_limits.tiers.items()}
            tier = str(data["usage_tier"])
            if tier in tiers:
                data = {**data, "spend_per_10min": tiers[tier]}
        return data

    # where each value came from (`resolve`), and grader.toml's values that the environment
    # overrode: a choice one source made silently over another is refused
    _origins: dict[str, Origin] = PrivateAttr(default_factory=dict)
    _overridden: dict[str, tuple[Any, Origin]] = PrivateAttr(default_factory=dict)

    def origin(self, key: str) -> Origin | None:
        """Where `resolve` took the setting `key` from (None: a default, or not resolved)."""
        return self._origins.get(key)

    def overridden(self, key: str) -> tuple[Any, Origin] | None:
        """grader.toml's value of `key` and the file, when the environment overrode it (None:
        the file did not set it, or it stands, or a flag overrode it)."""
        return self._overridden.get(key)


# Environment variables we honour besides GRADER_<FIELD>: the SDK's own names.
_SDK_ENV = {
    "GOOGLE_GEMINI_BASE_URL": "base_url",
    "GOOGLE_CLOUD_PROJECT": "project",
    "GOOGLE_CLOUD_LOCATION": "location",
}


ENTERPRISE_ENV = "GOOGLE_GENAI_USE_ENTERPRISE"  # what current Google docs tell users to set
VERTEX_ENV = "GOOGLE_GENAI_USE_VERTEXAI"  # its legacy name, still honoured
_TRUE = {"1", "true", "yes"}


def gemini_credentials_present(env: Mapping[str, str] | None = None) -> bool:
    """True when the SDK would find Developer API or Enterprise (Vertex) credentials."""
    env = os.environ if env is None else env
    if env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"):
        return True
    return enterprise_env(env) is not None and bool(env.get("GOOGLE_CLOUD_PROJECT"))


def enterprise_env(env: Mapping[str, str] | None = None) -> str | None:
    """The variable that selects Gemini Enterprise (Vertex AI), or None. As in the SDK,
    GOOGLE_GENAI_USE_ENTERPRISE wins when both are set."""
    env = os.environ if env is None else env
    for var in (ENTERPRISE_ENV, VERTEX_ENV):
        value = env.get(var)
        if value is not None and value != "":
            return var if value.lower() in _TRUE else None
    return None


# Settings that were removed, and what replaces them (a clear message beats "extra field").
_REMOVED = {
    "price_per_mtok": 'prices now come from the model table; to override them, add a price row '
                      'under [grader.models."<model id>"] in grader.toml (docs/configuration.md)',
    "thinking_budget": "Gemini 3 models take a thinking level: use --thinking LEVEL or "
                       "thinking = \"low\" in grader.toml (minimal, low, medium, high)",
}
_PATH_FIELDS = {"rubric", "prompts", "roster", "out", "db", "model_path"}
_LIST_FIELDS = {"only", "retry_flagged"}  # comma-separated in GRADER_* variables


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=path,
                          fix="fix the syntax at that line") from None
    section = data.get("grader", data)
    if not isinstance(section, dict):
        raise ConfigError("[grader] must be a table", path=path, fix="see docs/configuration.md")
    base = path.parent
    out: dict[str, Any] = {}
    for key, value in section.items():
        # Paths in grader.toml are relative to the file, not to the working directory.
        if key in _PATH_FIELDS and isinstance(value, str) and not Path(value).is_absolute():
            value = str((base / value).resolve())
        out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (*Settings.model_fields, *_REMOVED):
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            out[name] = [v.strip() for v in raw.split(",") if v.strip()] \
                if name in _LIST_FIELDS else raw
    for var, field in _SDK_ENV.items():
        if env.get(var) and field not in out:
            out[field] = env[var]
    return out


def find_config(start: Path) -> Path | None:
    """grader.toml in the class folder or any parent of it."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


# How an error names a value from each kind of source, and how it says to fix it.
_NAMED = {
    "flag": ("the flag {name} {value}", "pass {name} a valid value, or leave it out"),
    "env": ("the environment: {name}={value}", "correct or unset the variable {name}"),
    "file": ("{name}: {key} = {value}", "correct it in {name}"),
    "caller": ("the settings given: {key}={value}", "correct the value given"),
    "default": ("the default", "correct the value given"),
}


@dataclass(frozen=True)
class Origin:
    """Where one setting's value came from, named in an error about it: a flag (`name`: the
    command's option, e.g. --budget), the environment (the variable), grader.toml (its path),
    the caller of `resolve` (a flag no command option stands for), or the default."""

    kind: Literal["flag", "env", "file", "caller", "default"]
    name: str = ""

    def describe(self, key: str, value: Any) -> str:
        """The value as its source spelled it, e.g. "the flag --budget 0" ("--no-redact": a
        switch has no value to show)."""
        switch = self.kind == "flag" and isinstance(value, bool)
        value = _without_userinfo(value)
        shown = "***" if key in _SECRET_FIELDS else "" if switch else _shown(value, self.kind)
        return _NAMED[self.kind][0].format(name=self.name, key=key, value=shown).strip()

    def fix(self) -> str:
        return _NAMED[self.kind][1].format(name=self.name)


_SECRET_FIELDS = {"api_key", "openai_api_key"}


def _shown(value: Any, kind: str) -> str:
    if kind == "env":
        text = str(value) if not isinstance(value, list) else ",".join(map(str, value))
    elif kind == "file":
        text = json.dumps(value, default=str, ensure_ascii=False)
    elif isinstance(value, tuple | list):
        text = ",".join(map(str, value))
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))  # as typed: --budget 0, not 0.0
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_GEMINI_URL_ENV = Origin("env", "GOOGLE_GEMINI_BASE_URL")  # never --backend openai's server


def resolve(
    flags: Mapping[str, Any] | None = None,
    *,
    class_dir: Path | None = None,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    with_out: bool = False,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flag > environment > grader.toml > default. `None` flags mean "not given".
    `with_out`: a command that writes outputs; `out` then defaults to reports/<class folder
    name> (`out_dir`) when nothing else sets it. `flag_names`: the command option each flag
    came from (e.g. "timeout_s" -> "--timeout"), named when its value is refused; a flag
    without one is named as given to `resolve`. A refused value is blamed on where it came
    from: the flag, the environment variable or grader.toml."""
    env = os.environ if env is None else env
    layers: dict[str, Any] = {}
    origin: dict[str, Origin] = {}
    cfg = config or (find_config(class_dir) if class_dir else None)
    if cfg is not None:
        from_file = _read_toml(cfg)
        layers.update(from_file)
        origin.update(dict.fromkeys(from_file, Origin("file", str(cfg))))
    from_env = _from_env(env)
    layers.update(from_env)
    origin.update({k: Origin("env", var) for k, var in _env_names(env, from_env).items()})
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    layers.update(given)
    names = flag_names or {}
    origin.update({k: Origin("flag", names[k]) if k in names else Origin("caller")
                   for k in given})
    _own_base_url(layers, origin, from_file if cfg is not None else {}, str(cfg))
    for old, fix in _REMOVED.items():
        if old in layers:
            raise ConfigError(f"the setting {old} no longer exists (set by "
                              f"{origin[old].describe(old, layers[old])})",
                              path=_blamed_file([origin[old]]), fix=fix)
    if with_out and layers.get("out") is None and class_dir is not None:
        layers["out"] = default_out(class_dir)
    try:
        settings = Settings.model_validate(layers)
    except ValidationError as e:
        raise _invalid(e, layers, origin) from None
    settings._origins = origin
    if cfg is not None:
        settings._overridden = {k: (v, Origin("file", str(cfg))) for k, v in from_file.items()
                                if k in origin and origin[k].kind == "env"}
    if settings.models:  # [grader.models] rows: checked now, naming the file they came from
        where = origin.get("models")
        table(settings.models, path=where.name if where is not None and where.kind == "file"
              else CONFIG_FILE)
    return settings


def _own_base_url(layers: dict[str, Any], origin: dict[str, Origin],
                  from_file: Mapping[str, Any], cfg: str) -> None:
    """A model address is used only by the kind of backend it was set for. The Gemini SDK's
    variable names Google's endpoint, never the school's model server (`--backend openai`
    keeps grader.toml's address instead); a grader.toml that names its backend keeps its
    address for that backend: another one chosen by a flag or the environment never sends
    there (a Gemini key to the school's server, or students' work the other way)."""
    openai = layers.get("backend") == "openai"
    if openai and origin.get("base_url") == _GEMINI_URL_ENV:
        del layers["base_url"], origin["base_url"]
        if "base_url" in from_file:
            layers["base_url"], origin["base_url"] = from_file["base_url"], Origin("file", cfg)
    named = from_file.get("backend")
    if origin.get("base_url", Origin("default")).kind == "file" and named not in (None, "auto") \
            and (named == "openai") != openai:
        del layers["base_url"], origin["base_url"]


def _without_userinfo(value: Any) -> Any:
    """A URL's user name and password as *** (an error may show the value)."""
    if not isinstance(value, str) or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if "@" not in parts.netloc:
        return value
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _env_names(env: Mapping[str, str], found: Mapping[str, Any]) -> dict[str, str]:
    """The variable each setting read from the environment came from."""
    out = {}
    for key in found:
        prefixed = ENV_PREFIX + key.upper()
        out[key] = prefixed if env.get(prefixed) else next(
            (var for var, field in _SDK_ENV.items() if field == key and env.get(var)), prefixed)
    return out


def _blamed_file(origins: list[Origin]) -> str | None:
    """The grader.toml to put in front of the message when it is where every bad value is."""
    files = {o.name for o in origins if o.kind == "file"}
    return files.pop() if len(files) == 1 and all(o.kind == "file" for o in origins) else None


def _invalid(e: ValidationError, layers: Mapping[str, Any],
             origin: Mapping[str, Origin]) -> ConfigError:
    """One line per refused value, naming where it came from; one fix per source."""
    lines, blamed = [], []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        key = str(err["loc"][0]) if err["loc"] else ""
        where = origin.get(key, Origin("default")) if key in layers else None
        if where is not None:
            blamed.append(where)
        lines.append(f"  {loc}: {err['msg']}"
                     + (f" (from {where.describe(key, layers[key])})" if where else ""))
    fixes = list(dict.fromkeys(o.fix() for o in blamed))
    return ConfigError("invalid settings:\n" + "\n".join(lines), path=_blamed_file(blamed),
                       fix="; ".join(fixes) or "correct the values named above")


def auto_backend(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """Explicit choice wins; else Gemini Enterprise/Vertex or the Developer API when credentials
    are present; else local."""
    if settings.backend:
        return settings.backend
    chosen = enterprise_env(env)
    if settings.vertexai or chosen:
        name = "vertex" if chosen == VERTEX_ENV or (chosen is None and settings.vertexai) \
            else "enterprise"
        return name if gemini_credentials_present(env) or settings.project else "local"
    if settings.api_key is not None or gemini_credentials_present(env):
        return "gemini"
    return "local"


# --- where things are: the one place path defaults are resolved --------------------------------


def rubric_path(class_dir: Path, settings: Settings) -> Path:
    """--rubric / grader.toml, else rubric.yaml (or .yml) in the class folder."""
    own = next((class_dir / n for n in RUBRIC_NAMES if (class_dir / n).is_file()), None)
    if settings.rubric is not None:
        _one_rubric(class_dir, settings, own)
        return settings.rubric
    if own is not None:
        return own
    raise RubricError(
        "no rubric given and none found in the class folder", path=class_dir,
        fix="pass --rubric FILE, put rubric.yaml in the class folder, or set rubric in grader.toml",
    )


def _one_rubric(class_dir: Path, settings: Settings, own: Path | None) -> None:
    """Refuse to pick silently between two rubrics of a class: one that the environment or a
    grader.toml above the class folder names (a GRADER_RUBRIC left set, a course-wide
    grader.toml written for another assignment), and the class folder's own rubric.yaml or, for
    the environment, the rubric the class's grader.toml names. --rubric, or a grader.toml in
    the class folder itself, is a choice made for this class."""
    where, named = settings.origin("rubric"), settings.rubric
    if named is None or where is None or where.kind not in ("env", "file"):
        return
    if where.kind == "file" and Path(where.name).resolve().parent == class_dir.resolve():
        return
    others = [(own, f"the class folder has its own {own.name}")] if own is not None else []
    under = settings.overridden("rubric")
    if under is not None:  # the environment's, over a grader.toml's
        value, file = under
        others.append((Path(str(value)), f"{file.describe('rubric', value)}"))
    for other, said in others:
        try:
            if named.resolve() == other.resolve() or named.read_bytes() == other.read_bytes():
                continue
        except OSError:
            continue  # loading the rubric says what is wrong with it
        undo = f"unset {where.name}" if where.kind == "env" else f"remove rubric from {where.name}"
        raise ConfigError(
            f"two rubrics for this class: {where.describe('rubric', str(named))}, and {said}; "
            "grader does not guess which one is meant", path=class_dir,
            fix=f"pass --rubric with the one to grade against (e.g. --rubric {other}), or "
                f"{undo}")


def db_path(class_dir: Path, settings: Settings) -> Path:
    """--db / grader.toml, else CLASS_DIR/.grader/grader.sqlite."""
    return settings.db if settings.db is not None else class_dir / DEFAULT_DB_NAME


def out_dir(class_dir: Path, settings: Settings) -> Path:
    """--out / grader.toml, else reports/<class folder name> under the working directory."""
    return settings.out if settings.out is not None else default_out(class_dir)


def default_out(class_dir: Path) -> Path:
    return Path("reports") / class_dir.resolve().name


# Backends whose model runs on the school's own machines: no batch jobs, caches or Google prices.
# The local model costs nothing; a server's model (`openai`) is priced only by a price row in
# grader.toml (`Pricing.of_server`), its costs otherwise shown as "local, unpriced".
SELF_HOSTED = frozenset({"local", "openai"})


def server_url(settings: Settings) -> str:
    """The --backend openai server's /v1 root; refused, before any call, when it is not set or
    is not an http(s) address."""
    url = (settings.base_url or "").strip().rstrip("/")
    if not url:
        raise ConfigError(
            "--backend openai needs the address of the model server",
            fix="pass --base-url (the server's /v1 root, e.g. --base-url "
            "http://localhost:11434/v1 for Ollama, http://localhost:8080/v1 for llama-server), "
            "or set base_url in grader.toml")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--base-url {url!r} is not an http(s) address",
            fix="pass the server's /v1 root, e.g. --base-url http://localhost:8080/v1")
    return url


def redacting(settings: Settings, backend: str) -> bool:
    """Redact what is sent: the setting when given, else for every backend but the local one
    (nothing leaves the machine there). A server of the school's own (`openai`) is redacted
    too: grader cannot tell whose machine an address is; a teacher whose server runs on their
    own computer may pass --no-redact."""
    return settings.redact if settings.redact is not None else backend != "local"


def limits(settings: Settings) -> Limits:
    """Intake limits with the settings that override them."""
    return replace(DEFAULT_LIMITS, worker_wall_s=settings.extract_timeout_s,
                   worker_memory_mb=settings.extract_memory_mb,
                   max_request_bytes=int(settings.max_request_mb * MB))
