"""Settings resolve in one place: flag > environment > grader.toml > default; backend choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.config.settings import auto_backend, resolve
from grader.errors import ConfigError


def write_toml(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grader.toml").write_text("[grader]\n" + body, encoding="utf-8")
    return folder


def test_precedence_flag_env_toml_default(tmp_path: Path) -> None:
    cls = write_toml(tmp_path / "hw", 'concurrency = 3\nrpm = 10\ntpm = 500\nrubric = "r.yaml"\n')
    env = {"GRADER_RPM": "20", "GRADER_TPM": "900"}
    s = resolve({"tpm": 1000, "rpm": None}, class_dir=cls, env=env)
    assert s.tpm == 1000            # flag beats environment
    assert s.rpm == 20              # environment beats grader.toml (a None flag is "not given")
    assert s.concurrency == 3       # grader.toml beats the default
    assert s.timeout_s == 120.0     # default
    assert s.rubric == (cls / "r.yaml").resolve()  # relative to the toml file


def test_toml_found_in_a_parent_folder(tmp_path: Path) -> None:
    write_toml(tmp_path / "course", "concurrency = 5\n")
    sub = tmp_path / "course" / "hw1" / "submissions"
    sub.mkdir(parents=True)
    assert resolve({}, class_dir=sub, env={}).concurrency == 5


def test_invalid_value_names_field_and_source(tmp_path: Path) -> None:
    cls = write_toml(tmp_path / "hw", "concurrency = 0\nbogus = 1\n")
    with pytest.raises(ConfigError) as err:
        resolve({}, class_dir=cls, env={})
    text = str(err.value)
    assert "grader.toml" in text and "concurrency" in text and "bogus" in text
    assert "fix:" in text


def test_bad_toml_syntax(tmp_path: Path) -> None:
    cls = tmp_path / "hw"
    cls.mkdir()
    (cls / "grader.toml").write_text("[grader\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve({}, class_dir=cls, env={})


@pytest.mark.parametrize(("env", "flags", "expected"), [
    ({}, {}, "local"),
    ({"GEMINI_API_KEY": "k"}, {}, "gemini"),
    ({"GOOGLE_API_KEY": "k"}, {}, "gemini"),
    ({"GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_CLOUD_PROJECT": "p"}, {}, "vertex"),
    ({"GEMINI_API_KEY": "k"}, {"backend": "local"}, "local"),
    ({}, {"backend": "gemini"}, "gemini"),
])
def test_backend_selection(env: dict[str, str], flags: dict[str, str], expected: str) -> None:
    assert auto_backend(resolve(flags, env=env), env) == expected


def test_api_key_is_secret(tmp_path: Path) -> None:
    s = resolve({}, env={"GRADER_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(s) and "sk-very-secret" not in str(s.model_dump())
