"""Every `--flag` that any message of ours names exists on some `grade` command: a fix that sends
the teacher to a flag that is not there is a bug."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from grader.cli import cli

PACKAGE = Path(__file__).resolve().parent.parent / "grader"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Other programs' flags that messages may quote verbatim (the command is in the same string).
FOREIGN = {"pip install": {"--force-reinstall", "--no-deps"}, "llama-server": {"--parallel"}}


def cli_flags(group: click.Group) -> set[str]:
    flags = {"--help", "--version"}
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            flags |= cli_flags(cmd)
        for param in cmd.params:
            flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    for param in group.params:
        flags.update(o for o in param.opts if o.startswith("--"))
    return flags


def message_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, f-strings joined, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef
                                | ast.ClassDef)
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str))
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def own_flags(path: Path) -> set[str]:
    """Flags a developer tool declares for itself with argparse (`python -m grader.cli.reference
    --check`): its own messages may name them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {a.value for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "add_argument"
            for a in n.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}


def test_every_flag_named_in_a_message_exists() -> None:
    known = cli_flags(cli)
    missing = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if "testing" in path.parts:
            continue  # the fake server's own CLI
        local = own_flags(path)
        for line, text in message_strings(path):
            allowed = local.union(*(v for k, v in FOREIGN.items() if k in text))
            for flag in FLAG.findall(text):
                checked += 1
                if flag not in known and flag not in allowed:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {flag}")
    assert checked > 20  # the walk really reads the messages
    assert not missing, "messages name flags that do not exist:\n" + "\n".join(missing)
