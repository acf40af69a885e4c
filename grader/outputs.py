"""Folders that grader writes: how they are marked, recognised and kept apart from the class.

Every output folder holds a marker file, `.grader-output`. Discovery never reads a folder that
holds grader's own marker as a student's work (so `cd class && grade run .`, whose reports land
in `class/reports/class/`, does not grade its own reports on the next run), and `check_out_dir`
refuses an output folder that would mix reports with submissions.

Only the marker's content makes a folder grader's: a fixed first line, then a random token line
(`token <32 hex digits>`) that `mark_output_folder` writes. A file merely *named*
`.grader-output` (empty, or anything else a student's folder happens to hold) no longer hides
the folder, which would make a student vanish from every output with no flag; discovery grades
that folder and notes the foreign file. The marker is read like a student's file: without
following links, only when it is a regular file, and at most `_MARKER_MAX` bytes.

A third line names the class folder whose reports the folder holds (`owner_of`), so that one
class's reports never silently replace another's (`check_owner`): two class folders of one name
under the default reports/<name>, a grader.toml's `out` shared by several classes, or a student's
folder passed as if it were the class.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path

from grader.errors import ConfigError

OUTPUT_MARKER = ".grader-output"
MARKER_HEAD = "grader output folder: written by grader; do not edit, copy or remove this file"
_MARKER_BODY = ("This folder was written by grader (reports, review workbook, exports).\n"
                "grader never reads a folder holding this file as a student's submission.\n")
_TOKEN = re.compile(r"token [0-9a-f]{32}")
_CLASS = "class"  # the marker's third line: `class {"path": …, "from_here": …}` (`_claim`)
# What grader wrote before the marker had a head and a token: still grader's, byte for byte,
# so report folders written by an older grader inside a class folder stay out of the class.
_LEGACY_TEXT = _MARKER_BODY.encode("utf-8")
_MARKER_MAX = 4096
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0))


def _marker_bytes(marker: Path) -> bytes | None:
    """The first `_MARKER_MAX` bytes of `marker`, or None when it is not a regular file (a link
    is not followed, a FIFO is not waited on) or cannot be read."""
    try:
        fd = os.open(marker, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _MARKER_MAX)
    except OSError:
        return None
    finally:
        os.close(fd)


def _is_current(data: bytes) -> bool:
    lines = data.decode("utf-8", "replace").split("\n")
    return len(lines) > 2 and lines[0] == MARKER_HEAD and _TOKEN.fullmatch(lines[1]) is not None


def is_grader_marker(marker: Path) -> bool:
    """True when the file `marker` is a marker grader wrote: its first line is `MARKER_HEAD` and
    its second a token line (or it is, byte for byte, what older versions wrote). A student's
    `.grader-output` cannot pass by accident, so it never hides their folder."""
    data = _marker_bytes(marker)
    return data is not None and (_is_current(data) or data == _LEGACY_TEXT)


def mark_output_folder(out_dir: Path, class_dir: Path | None = None) -> Path:
    """Create `out_dir` if needed and put the marker in it; returns the marker's path.
    `class_dir`: the class whose reports go there, written into the marker (`owner_of`) after
    `check_owner` let it in.

    A marker grader already wrote is kept (its token stays the same); anything else named
    `.grader-output` there, an older marker included, is replaced atomically (a link is
    replaced, never written through)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / OUTPUT_MARKER
    data = _marker_bytes(marker)
    owner = _claim(out_dir, class_dir) if class_dir is not None else None
    if data is not None and _is_current(data):
        if owner is None or _owner(data) == owner:
            return marker
        assert class_dir is not None  # (owner is None without it)
        check_owner(out_dir, class_dir)
        token = data.decode("utf-8", "replace").split("\n")[1]
    else:
        token = f"token {secrets.token_hex(16)}"
    text = f"{MARKER_HEAD}\n{token}\n"
    if owner is not None:
        text += f"{_CLASS} {json.dumps(owner, ensure_ascii=False)}\n"
    tmp = out_dir / f"{OUTPUT_MARKER}.{secrets.token_hex(4)}.tmp"
    tmp.write_text(text + _MARKER_BODY, encoding="utf-8")
    try:
        os.replace(tmp, marker)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"the output folder's marker cannot be written ({e.strerror or e})",
                          path=marker, fix=f"remove {marker} (grader writes it) and rerun"
                          ) from None
    return marker


def _claim(out_dir: Path, class_dir: Path) -> dict[str, str]:
    """What a marker says of its class: the folder, and the way to it from the output folder
    (which still leads there when both were moved or copied together, as `grade init`'s
    hw1/reports and hw1/submissions are)."""
    here = class_dir.resolve()
    return {"path": str(here), "from_here": os.path.relpath(here, out_dir.resolve())}


def _owner(data: bytes) -> dict[str, str] | None:
    """The class a marker names (its third line, `_claim`), None when it names none."""
    lines = data.decode("utf-8", "replace").split("\n")
    if len(lines) > 2 and lines[2].startswith(_CLASS + " "):
        try:
            owner = json.loads(lines[2][len(_CLASS) + 1:])
        except ValueError:
            return None
        if isinstance(owner, dict) and all(isinstance(owner.get(k), str)
                                           for k in ("path", "from_here")):
            return {k: owner[k] for k in ("path", "from_here")}
    return None


def _claimed(out_dir: Path) -> dict[str, str] | None:
    """The class `out_dir`'s marker names (None: no marker of grader's, or one written before
    markers named their class)."""
    data = _marker_bytes(out_dir / OUTPUT_MARKER)
    return _owner(data) if data is not None and _is_current(data) else None


def owner_of(out_dir: Path) -> Path | None:
    """The class folder whose reports `out_dir` holds, as its marker names it."""
    owner = _claimed(out_dir)
    return Path(owner["path"]) if owner is not None else None


def check_owner(out_dir: Path, class_dir: Path) -> None:
    """Refuse to write one class's reports over another's: `out_dir` holds the reports of a
    class folder that is not `class_dir` and is still there (two classes of one name under
    the default reports/<name>, a grader.toml's `out` shared by several classes, a student's
    folder graded as if it were the class). Output folders are the class's own when the
    folder they name is gone (the class was moved or renamed), or when they name it by the way
    from the output folder (the two were moved or copied together: an archived hw1-2025/)."""
    owner = _claimed(out_dir)
    if owner is None:
        return
    named, here = Path(owner["path"]), class_dir.resolve()
    if named == here or not named.is_dir() \
            or (out_dir.resolve() / owner["from_here"]).resolve() == here:
        return
    if here.is_relative_to(named):
        raise ConfigError(
            f"{class_dir} is inside the class folder {named}, whose reports are in the "
            f"output folder {out_dir}: written for this folder alone, they would replace the "
            "class's", path=class_dir,
            fix=f"pass the class folder itself ({named}), or --out with a folder of its own")
    raise ConfigError(
        f"the output folder holds the reports of another class, {named}: this class's "
        "reports would replace them", path=out_dir,
        fix=f"pass --out with a folder of this class's own (e.g. --out {out_dir}-2), or "
            f"remove {out_dir} if those reports are no longer wanted")


def is_output_folder(path: Path) -> bool:
    """True when `path` is a folder grader wrote: it holds grader's own marker."""
    return is_grader_marker(path / OUTPUT_MARKER)


def check_out_dir(class_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder that is the class folder itself or an existing file (a command
    that writes there checks `check_owner` too).

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
