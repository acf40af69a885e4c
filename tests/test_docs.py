"""The docs say what the code does: every ```toml block of README.md and docs/ loads through
grader's own settings loader, every `grade ...` line of a ```sh block names a command and
options that exist, every relative link points at a file, and the reference pages generated
from the code (docs/reference/) are up to date."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest

from grader.cli import cli
from grader.cli.reference import main as reference
from grader.config.models import table
from grader.config.settings import Settings, resolve

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def blocks(kind: str) -> list[tuple[str, str]]:
    """(where, text) of every fenced block of `kind` in the docs."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            if m.group(1) == kind:
                line = text[:m.start()].count("\n") + 1
                out.append((f"{page.relative_to(ROOT)}:{line}", m.group(2)))
    return out


def test_the_docs_have_toml_and_shell_examples() -> None:
    assert len(blocks("toml")) >= 3 and len(blocks("sh")) >= 10


@pytest.mark.parametrize(("where", "text"), blocks("toml"), ids=[w for w, _ in blocks("toml")])
def test_every_toml_example_is_a_valid_grader_toml(tmp_path: Path, where: str,
                                                     text: str) -> None:
    path = tmp_path / "grader.toml"
    path.write_text(text, encoding="utf-8")
    settings = resolve({}, config=path, env={})  # raises ConfigError naming what is wrong
    assert isinstance(settings, Settings), where
    table(settings.models)  # [grader.models."<id>"] overrides are checked too


def grade_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after `grade`) of every `grade ...` command in a ```sh block."""
    out = []
    for where, text in blocks("sh"):
        for line in text.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;|\|", line):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:
                    continue
                while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] == "env"):
                    words = words[1:]
                if words and (words[0] == "grade" or words[0].endswith("/grade")):
                    out.append((where, words[1:]))
    return out


def test_there_are_grade_lines_to_check() -> None:
    assert len(grade_lines()) >= 20


@pytest.mark.parametrize(("where", "argv"), grade_lines(),
                         ids=[f"{w} {' '.join(a)[:40]}" for w, a in grade_lines()])
def test_every_grade_line_names_a_command_and_options_that_exist(where: str,
                                                                 argv: list[str]) -> None:
    cmd: click.Command = cli
    rest = list(argv)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        found = cmd.get_command(click.Context(cmd), rest[0])
        assert found is not None, f"{where}: `grade {' '.join(argv)}`: no command {rest[0]!r}"
        cmd, rest = found, rest[1:]
    if isinstance(cmd, click.Group):  # `grade --help`, `grade --version`
        rest = [w for w in rest if w not in ("--help", "--version", "--debug")]
        assert not rest, f"{where}: `grade {' '.join(argv)}` names no command"
        return
    known = {"--help"} | {o for p in cmd.params if isinstance(p, click.Option)
                          for o in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            assert name in known, (f"{where}: `grade {' '.join(argv)}`: {name} is not an option "
                                   f"of `{cmd.name}` ({', '.join(sorted(known))})")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_points_at_a_file(page: Path) -> None:
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # web addresses and anchors in the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)}: link to {target} points at nothing"


def test_the_generated_reference_pages_are_up_to_date() -> None:
    assert reference(["--check"]) == 0, "run `make docs` and commit docs/reference/"


def test_every_setting_says_what_it_is() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert not missing, f"give these settings a description (Field(description=...)): {missing}"


def test_every_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   gemini_env: Any) -> None:
    examples = blocks("python")
    assert examples, "the docs show the library from Python"
    import shutil
    shutil.copytree(ROOT / "samples" / "intro-python", tmp_path / "work" / "class")
    shutil.copytree(ROOT / "rubrics", tmp_path / "rubrics")  # its grader.toml's ../../rubrics
    monkeypatch.chdir(tmp_path / "work")
    for where, code in examples:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, where, "exec"), {"__name__": "__docs__"})
        assert "graded" in out.getvalue(), where
    assert gemini_env.stats()["by_endpoint"], "the example graded through the fake"
