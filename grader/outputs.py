"""Folders that grader writes: how they are marked, recognised and kept apart from the class.

Every output folder holds a marker file, `.grader-output`. Discovery never reads a folder that
holds one as a student's work (so `cd class && grade run .`, whose reports land in
`class/reports/class/`, does not grade its own reports on the next run), and `check_out_dir`
refuses an output folder that would mix reports with submissions.
"""

from __future__ import annotations

import os
from pathlib import Path

from grader.errors import ConfigError

OUTPUT_MARKER = ".grader-output"
_MARKER_TEXT = ("This folder was written by grader (reports, review workbook, exports).\n"
                "grader never reads a folder holding this file as a student's submission.\n")


def mark_output_folder(out_dir: Path) -> Path:
    """Create `out_dir` if needed and put the marker in it; returns the marker's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / OUTPUT_MARKER
    if not os.path.lexists(marker):
        marker.write_text(_MARKER_TEXT, encoding="utf-8")
    return marker


def is_output_folder(path: Path) -> bool:
    """True when `path` is a folder grader wrote (it holds the marker; links are not followed)."""
    return os.path.lexists(path / OUTPUT_MARKER)


def check_out_dir(class_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder that is the class folder itself or an existing file.

    An output folder *inside* the class folder is allowed: the marker keeps it out of the class.
    Raises ConfigError naming the folder and the fix."""
    out, cls = out_dir.resolve(), class_dir.resolve()
    if out == cls:
        raise ConfigError(
            "the output folder is the class folder: reports would be read as submissions",
            path=out_dir, fix="pass --out with another folder (e.g. --out reports)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("the output folder is an existing file", path=out_dir,
                          fix="pass --out with a folder path, or move the file away")
