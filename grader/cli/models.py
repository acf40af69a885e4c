"""`grade models`: the model table as a teacher needs it, and `--check` against the service."""

from __future__ import annotations

from typing import Any

import click

from grader.cli import options as opt
from grader.cli.common import _handle_errors, _settings
from grader.escape import terminal_safe


@click.command("models")
@click.option("--check", is_flag=True,
              help="Compare the table with the models the service lists (needs a key or a "
              "project): names new models the table lacks and rows the service dropped.")
@opt.BACKEND
@opt.PROJECT
@_handle_errors
def models(check: bool, **flags: Any) -> None:
    """Each model's status, price today and at its next change, notice period, thinking levels
    and caching; which one is the default and why."""
    from grader.config import models as table
    from grader.config.catalog import catalog, check_table, render, render_check
    from grader.config.generation import surface_of
    from grader.config.settings import auto_backend
    from grader.errors import ConfigError

    settings = _settings(None, **flags)
    tbl = table.table(settings.models)
    day = table.today()
    backend = auto_backend(settings)
    surface = surface_of(backend) or "developer"
    click.echo(render(catalog(tbl, surface, day), tbl, surface, day))
    if not check:
        return
    if surface_of(backend) is None:
        raise ConfigError("--check asks Google which models it lists, and no Gemini credentials "
                          "are set", fix="set GEMINI_API_KEY (or pass --backend enterprise "
                          "with --project)")
    result = check_table(settings, backend, tbl, day)
    click.echo("")
    click.echo(terminal_safe(render_check(result, tbl)))
    if result.stale:
        raise SystemExit(1)
