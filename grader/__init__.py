"""grader: grade a class folder of submissions against a rubric with Gemini or a local model.

From Python, the same run as `grade run FOLDER`::

    from pathlib import Path
    import grader

    settings = grader.resolve({"backend": "local"})
    summary = grader.run_class(Path("class"), settings)
    print(summary.graded, summary.flagged, summary.cost_usd)

The names below are imported when first used, so `import grader` stays cheap and a program
that grades loads neither the review workbook's nor the other backends' libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "resolve": "grader.config.settings",
    "Settings": "grader.config.settings",
    "run_class": "grader.online.pipeline",
    "RunSummary": "grader.online.pipeline",
    "GraderError": "grader.errors",
}
__all__ = ["GraderError", "RunSummary", "Settings", "__version__", "resolve", "run_class"]

if TYPE_CHECKING:
    from grader.config.settings import Settings, resolve
    from grader.errors import GraderError
    from grader.online.pipeline import RunSummary, run_class


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'grader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
