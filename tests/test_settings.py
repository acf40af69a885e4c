"""Settings resolve in one place: flag > environment > grader.toml > default; backend choice."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from grader.config.settings import auto_backend, resolve
from grader.errors import ConfigError

from _cli import grade


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


# --- a refused value names where it came from (through the CLI) --------------------------------


@pytest.fixture
def no_grader_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in [v for v in os.environ if v.startswith("GRADER_") and v != "GRADER_TODAY"]:
        monkeypatch.delenv(var)
    return monkeypatch


@pytest.mark.parametrize(("where", "named", "not_named"), [
    ("flag", "budget: Input should be greater than 0 (from the flag --budget 0)", "grader.toml"),
    ("env", "budget: Input should be greater than 0 (from the environment: GRADER_BUDGET=0)",
     "grader.toml"),
    ("file", "budget: Input should be greater than 0 (from {toml}: budget = 0)", "--budget"),
])
def test_a_bad_budget_names_its_own_source(no_grader_env: pytest.MonkeyPatch, tmp_path: Path,
                                           where: str, named: str, not_named: str) -> None:
    cls = write_toml(tmp_path / "hw", "budget = 0\n" if where == "file" else "concurrency = 2\n")
    args = ["run", str(cls)]
    if where == "flag":
        args += ["--budget", "0"]
    elif where == "env":
        no_grader_env.setenv("GRADER_BUDGET", "0")
    code, output = grade(*args)
    toml = cls / "grader.toml"
    assert code == 2 and named.format(toml=toml) in output, output
    assert not_named not in output.replace(named.format(toml=toml), "")
    assert (f"{toml}: invalid settings" in output) == (where == "file")  # its own value only


def test_every_setting_names_its_source_and_only_flags_that_exist(
        no_grader_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cls = write_toml(tmp_path / "hw", "rpm = 0\nbudget = 0\n")
    no_grader_env.setenv("GRADER_CONCURRENCY", "0")
    # --timeout sets timeout_s: the message names the flag the user typed, and a flag beats
    # the file's bad budget
    code, output = grade("run", str(cls), "--timeout", "0", "--budget", "1")
    assert code == 2, output
    toml = cls / "grader.toml"
    for line in ("timeout_s: Input should be greater than 0 (from the flag --timeout 0)",
                 "concurrency: Input should be greater than or equal to 1 (from the "
                 "environment: GRADER_CONCURRENCY=0)",
                 f"rpm: Input should be greater than or equal to 1 (from {toml}: rpm = 0)"):
        assert line in output
    assert "budget" not in output and "--timeout-s" not in output
    fix = " ".join(output.split()).split("fix: ")[1]
    assert sorted(fix.split("; ")) == ["correct it in " + str(toml), "correct or unset the "
                                       "variable GRADER_CONCURRENCY", "pass --timeout a valid "
                                       "value, or leave it out"]
    # `grade estimate` takes --concurrency too
    code, output = grade("estimate", str(cls), "--concurrency", "0")
    assert code == 2 and "(from the flag --concurrency 0)" in output, output


def test_removed_settings_and_resolve_callers_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"thinking_budget no longer exists \(set by the "
                       r"environment: GRADER_THINKING_BUDGET=512\)"):
        resolve({}, env={"GRADER_THINKING_BUDGET": "512"})
    # a library caller's flag is named as given, never as an option the CLI may not have
    with pytest.raises(ConfigError, match=r"\(from the settings given: budget=-1\)") as err:
        resolve({"budget": -1.0}, env={})
    assert "--budget" not in str(err.value) and err.value.path is None
    with pytest.raises(ConfigError, match=r"\(from the settings given: api_key=\*\*\*\)"):
        resolve({"api_key": 12345}, env={})  # a key is never shown


def test_the_usage_tier_sets_the_spend_limit_from_the_model_table(tmp_path: Path) -> None:
    from grader.config.models import packaged

    limits = packaged().spend_limits
    assert limits.tiers == {"1": 10.0, "2": 50.0, "3": 200.0} and limits.source
    cls = write_toml(tmp_path / "hw", 'usage_tier = "2"\n')
    assert resolve({}, class_dir=cls, env={}).spend_per_10min == 50.0
    assert resolve({}, env={"GRADER_USAGE_TIER": "1"}).spend_per_10min == 10.0
    # a spend limit of your own, from any source, wins over the tier's
    assert resolve({"spend_per_10min": 4.0}, class_dir=cls, env={}).spend_per_10min == 4.0
    assert resolve({}, env={"GRADER_USAGE_TIER": "3", "GRADER_SPEND_PER_10MIN": "120"}
                   ).spend_per_10min == 120.0
    with pytest.raises(ConfigError, match="usage_tier"):
        resolve({}, env={"GRADER_USAGE_TIER": "4"})


def test_the_gemini_base_url_variable_never_points_the_openai_backend(tmp_path: Path) -> None:
    """GOOGLE_GEMINI_BASE_URL names Google's endpoint (the SDK's variable): `--backend openai`
    does not send the class there; it asks for the server's address instead."""
    env = {"GOOGLE_GEMINI_BASE_URL": "https://gemini.example"}
    assert resolve({"backend": "openai"}, env=env).base_url is None
    assert resolve({"backend": "gemini"}, env=env).base_url == "https://gemini.example"
    assert resolve({"backend": "openai"}, env={**env, "GRADER_BASE_URL": "http://h:8080/v1"}
                   ).base_url == "http://h:8080/v1"
    assert resolve({"backend": "openai", "base_url": "http://h:1/v1"}, env=env
                   ).base_url == "http://h:1/v1"
    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "samples" / "intro-python", tmp_path / "class")
    os.environ["GOOGLE_GEMINI_BASE_URL"] = "https://gemini.example"
    try:
        code, out = grade("run", str(tmp_path / "class"), "--backend", "openai", "--model", "m",
                          "--rubric", str(root / "rubrics" / "intro-python.yaml"),
                          "--db", str(tmp_path / "g.sqlite"))
    finally:
        del os.environ["GOOGLE_GEMINI_BASE_URL"]
    assert code == 2 and "needs the address of the model server" in out, out
    assert "gemini.example" not in out and not (tmp_path / "g.sqlite").exists()


def test_a_server_address_in_grader_toml_serves_only_the_backend_it_was_set_for(
        tmp_path: Path) -> None:
    toml = tmp_path / "grader.toml"
    toml.write_text('[grader]\nbackend = "openai"\nbase_url = "http://gpu.school:8080/v1"\n',
                    encoding="utf-8")
    gemini_env = {"GOOGLE_GEMINI_BASE_URL": "https://gemini.example"}
    # the SDK's variable does not hide the school's server the file names
    assert resolve(config=toml, env=gemini_env).base_url == "http://gpu.school:8080/v1"
    assert resolve(config=toml, env={}).base_url == "http://gpu.school:8080/v1"
    # another backend chosen by a flag never sends there (nor the Gemini key)
    assert resolve({"backend": "gemini"}, config=toml, env={}).base_url is None
    assert resolve({"backend": "gemini"}, config=toml, env=gemini_env
                   ).base_url == "https://gemini.example"
    # a file that names no backend: its address stands for whichever is chosen
    toml.write_text('[grader]\nbase_url = "https://proxy.example"\n', encoding="utf-8")
    assert resolve({"backend": "gemini"}, config=toml, env={}).base_url == "https://proxy.example"


def test_the_library_api_is_at_the_package_top_and_loads_only_what_a_run_needs() -> None:
    import subprocess
    import sys
    code = ("import sys, grader\n"
            "for name in grader.__all__: getattr(grader, name)\n"
            "print(sorted(m for m in ('openai', 'openpyxl', 'llama_cpp', 'click',"
            " 'grader.backends.openai_compat', 'grader.review.workbook') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"  # the other backends', the CLI's and the import's libraries
    import grader
    assert grader.run_class.__module__ == "grader.online.pipeline"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        grader.nothing  # noqa: B018


def test_a_server_address_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as e:
        resolve({"backend": "openai", "base_url": "http://bob:s3cret@gpu.school:8080/v1"},
                env={})
    assert "user name or password" in str(e.value) and "OPENAI_API_KEY" in str(e.value)
    assert "s3cret" not in str(e.value) and "bob" not in str(e.value)
    assert resolve({"backend": "openai", "base_url": "http://gpu.school:8080/v1"}, env={}
                   ).base_url == "http://gpu.school:8080/v1"
