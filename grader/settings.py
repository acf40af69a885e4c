"""Settings resolve in one place: flag > environment > grader.toml > default.

`resolve()` is the only function that reads `grader.toml` or `GRADER_*` variables; everything else
receives a validated `Settings`. Credentials are never stored here in clear text beyond a SecretStr,
and never written to the store or logs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError, RubricError, format_validation_error
from .limits import DEFAULT_LIMITS, MB, Limits

# The one place the default model is set: a current, stable Flash model (models page, 2026-11).
DEFAULT_GEMINI_MODEL = "gemini-3.5-flash"
CONFIG_FILE = "grader.toml"
ENV_PREFIX = "GRADER_"
RUBRIC_NAMES = ("rubric.yaml", "rubric.yml")
DEFAULT_DB_NAME = ".grader/grader.sqlite"


class Settings(BaseModel):
    """Everything a run needs. Field names are the flag names with '-' -> '_'."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to grade
    rubric: Path | None = None
    prompts: Path | None = Field(default=None, description="folder overriding prompts/ templates")
    roster: Path | None = None
    out: Path | None = None
    db: Path | None = None
    limit: int | None = Field(default=None, ge=1)
    regrade: bool = False
    only: tuple[str, ...] | None = Field(
        default=None, description="grade only these student ids; the others keep their grade")
    retry_flagged: tuple[str, ...] | None = Field(
        default=None, description="grade flagged students again (only these flag reasons, "
        "when given)")
    dry_run: bool = False
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
    calibration_min_qwk: float = Field(
        default=0.6, ge=-1, le=1, description="grade run refuses a class whose calibration has "
        "a criterion below this quadratic weighted kappa (without --force)")

    # which model
    backend: str | None = Field(default=None, description="gemini | vertex | local; None = auto")
    model: str | None = Field(default=None, description="None = the backend's default model")
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int = 0
    max_output_tokens: int = Field(default=8192, ge=64)
    thinking_budget: int | None = Field(default=None, ge=-1)

    # throughput and robustness
    concurrency: int = Field(default=8, ge=1, le=1024)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    max_connection_failures: int = Field(
        default=5, ge=1, description="connection failures in a row that stop the run")
    max_file_mb: float = Field(default=20.0, gt=0)
    max_request_mb: float = Field(
        default=20.0, gt=0, description="everything sent for one student (media base64)")
    extract_timeout_s: float = Field(
        default=120.0, gt=0, description="wall-clock seconds to read one student's files")
    extract_memory_mb: int = Field(
        default=1024, ge=64, description="memory of the process that reads PDFs, Word, notebooks")
    price_per_mtok: tuple[float, float, float] | None = Field(
        default=None,
        description="USD per million tokens (input, output, cached input) for the report's cost"
        " estimate; overrides the built-in table, e.g. for a model it does not list",
    )

    # Gemini / Vertex (the SDK reads its own env vars too; these are overrides)
    api_key: SecretStr | None = None
    base_url: str | None = None
    vertexai: bool | None = None
    project: str | None = None
    location: str | None = None

    # local (llama.cpp)
    model_path: Path | None = None
    n_ctx: int = Field(default=8192, ge=512)
    n_threads: int | None = Field(default=None, ge=1)


# Environment variables we honour besides GRADER_<FIELD>: the SDK's own names.
_SDK_ENV = {
    "GOOGLE_GEMINI_BASE_URL": "base_url",
    "GOOGLE_CLOUD_PROJECT": "project",
    "GOOGLE_CLOUD_LOCATION": "location",
}


def gemini_credentials_present(env: Mapping[str, str] | None = None) -> bool:
    """True when the SDK would find Developer API or Vertex AI credentials in the environment."""
    env = os.environ if env is None else env
    if env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"):
        return True
    vertex = env.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in {"1", "true", "yes"}
    return vertex and bool(env.get("GOOGLE_CLOUD_PROJECT"))


def vertex_selected(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in {"1", "true", "yes"}


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
        raise ConfigError("[grader] must be a table", path=path, fix="see README: Configuration")
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
    for name in Settings.model_fields:
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


def resolve(
    flags: Mapping[str, Any] | None = None,
    *,
    class_dir: Path | None = None,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flag > environment > grader.toml > default. `None` flags mean "not given"."""
    env = os.environ if env is None else env
    layers: dict[str, Any] = {}
    cfg = config or (find_config(class_dir) if class_dir else None)
    source = "defaults"
    if cfg is not None:
        layers.update(_read_toml(cfg))
        source = str(cfg)
    layers.update(_from_env(env))
    layers.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return Settings.model_validate(layers)
    except ValidationError as e:
        raise ConfigError(
            "invalid settings:\n" + format_validation_error(e),
            path=source,
            fix="correct the value in the flag, GRADER_* variable or grader.toml named above",
        ) from None


def auto_backend(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """Explicit choice wins; else Gemini/Vertex when credentials are present; else local."""
    if settings.backend:
        return settings.backend
    if settings.vertexai or vertex_selected(env):
        return "vertex" if gemini_credentials_present(env) or settings.project else "local"
    if settings.api_key is not None or gemini_credentials_present(env):
        return "gemini"
    return "local"


# --- where things are: the one place path defaults are resolved --------------------------------


def rubric_path(class_dir: Path, settings: Settings) -> Path:
    """--rubric / grader.toml, else rubric.yaml (or .yml) in the class folder."""
    if settings.rubric is not None:
        return settings.rubric
    for name in RUBRIC_NAMES:
        if (class_dir / name).is_file():
            return class_dir / name
    raise RubricError(
        "no rubric given and none found in the class folder", path=class_dir,
        fix="pass --rubric FILE, put rubric.yaml in the class folder, or set rubric in grader.toml",
    )


def db_path(class_dir: Path, settings: Settings) -> Path:
    """--db / grader.toml, else CLASS_DIR/.grader/grader.sqlite."""
    return settings.db if settings.db is not None else class_dir / DEFAULT_DB_NAME


def out_dir(class_dir: Path, settings: Settings) -> Path:
    """--out / grader.toml, else reports/<class folder name> under the working directory."""
    return settings.out if settings.out is not None else Path("reports") / class_dir.resolve().name


def limits(settings: Settings) -> Limits:
    """Intake limits with the settings that override them."""
    return replace(DEFAULT_LIMITS, worker_wall_s=settings.extract_timeout_s,
                   worker_memory_mb=settings.extract_memory_mb,
                   max_request_bytes=int(settings.max_request_mb * MB))
