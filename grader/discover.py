"""Find the students in a class folder and the files each one handed in.

Teachers get class folders in a handful of shapes (one file per student, one folder per student,
a Canvas or Moodle bulk download), so the layout is recognised per entry rather than configured.
Students are yielded sorted by id so every run sees them in the same order.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from .errors import InputError

Source = Literal["file", "folder", "canvas", "moodle"]

# Files and folders that are never part of anyone's submission.
IGNORED_NAMES = frozenset({
    "__MACOSX", ".DS_Store", ".ipynb_checkpoints", "__pycache__", "Thumbs.db", "desktop.ini",
})
# The assignment's own files in the class-folder root.
ASSIGNMENT_FILES = frozenset({"rubric.yaml", "rubric.yml", "grader.toml", "roster.csv"})

# Canvas: `smithjane_12345_67890_answer.py`, `smith_jane_LATE_12345_67890_answer.py`.
CANVAS_RE = re.compile(
    r"^(?P<name>[A-Za-z][A-Za-z'\-]*(?:_[A-Za-z][A-Za-z'\-]*)*?)_(?:(?P<late>LATE)_)?"
    r"(?P<uid>\d+)_(?P<att>\d+)_(?P<file>.+)$"
)
# Moodle: folder `Full Name_12345_assignsubmission_file_` (or flat file `..._file_answer.py`).
MOODLE_RE = re.compile(
    r"^(?P<name>.+?)_(?P<uid>\d+)_assignsubmission_(?P<kind>[a-z]+)_(?P<rest>.*)$"
)


class Submission(BaseModel):
    """One student's hand-in. `names` are display names parallel to `files` (relative to the
    submission, Canvas/Moodle prefixes removed); `files` is empty for a roster student who
    handed nothing in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: str
    name: str | None = None
    email: str | None = None
    files: tuple[Path, ...] = ()
    names: tuple[str, ...] = ()
    late: bool = False
    source: Source = "file"

    @model_validator(mode="after")
    def _names_match(self) -> Submission:
        if len(self.names) != len(self.files):
            raise ValueError("names must be parallel to files")
        return self


@dataclass
class _Acc:
    """Collects one student's files while scanning (several entries may belong to one student)."""

    source: Source
    name: str | None = None
    late: bool = False
    files: dict[Path, str] = field(default_factory=dict)


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES or name.startswith("~$")


def _walk(folder: Path) -> Iterator[Path]:
    """All regular files under `folder`, skipping hidden and OS clutter at every level."""
    for entry in sorted(folder.iterdir()):
        if is_ignored(entry.name):
            continue
        if entry.is_dir():
            if not entry.is_symlink():  # a linked folder could loop back on itself
                yield from _walk(entry)
        elif entry.is_file():
            yield entry


def _canvas_name(raw: str) -> str:
    """`smith_jane` -> "Jane Smith"; Canvas' squashed `smithjane` is kept as one word."""
    parts = [p for p in raw.split("_") if p]
    if len(parts) >= 2:
        parts = parts[1:] + parts[:1]
    return " ".join(p[:1].upper() + p[1:] for p in parts)


def _is_assignment_file(entry: Path, roster: Path | None) -> bool:
    if entry.name.lower() in ASSIGNMENT_FILES or entry.name.lower().startswith("readme"):
        return True
    return roster is not None and entry.resolve() == roster.resolve()


def _scan(class_dir: Path, roster: Path | None) -> dict[str, _Acc]:
    found: dict[str, _Acc] = {}

    def acc(sid: str, source: Source, name: str | None = None) -> _Acc:
        a = found.setdefault(sid, _Acc(source=source, name=name))
        if a.name is None:
            a.name = name
        return a

    for entry in sorted(class_dir.iterdir()):
        if is_ignored(entry.name):
            continue
        if entry.is_dir():
            m = MOODLE_RE.match(entry.name)
            if m:
                a = acc(m["uid"], "moodle", m["name"].strip())
                for f in _walk(entry):
                    a.files[f] = f.relative_to(entry).as_posix()
            else:
                a = acc(entry.name, "folder")
                for f in _walk(entry):
                    a.files[f] = f.relative_to(entry).as_posix()
            continue
        if not entry.is_file() or _is_assignment_file(entry, roster):
            continue
        if m := MOODLE_RE.match(entry.name):
            a = acc(m["uid"], "moodle", m["name"].strip())
            a.files[entry] = m["rest"] or entry.name
        elif m := CANVAS_RE.match(entry.name):
            a = acc(m["uid"], "canvas", _canvas_name(m["name"]))
            a.late = a.late or bool(m["late"])
            a.files[entry] = m["file"]
        else:
            stem = entry.name.split(".", 1)[0] or entry.name
            acc(stem, "file").files[entry] = entry.name
    return found


@dataclass(frozen=True)
class RosterEntry:
    student_id: str
    name: str | None
    email: str | None


_ID_HEADERS = ("id", "student_id", "studentid", "student id", "student number", "student_number",
               "user_id", "userid", "sis user id", "sis_user_id", "login_id", "username", "login")
_NAME_HEADERS = ("name", "full name", "full_name", "student name", "student_name", "student",
                 "display name")
_FIRST_HEADERS = ("first name", "first_name", "firstname", "given name")
_LAST_HEADERS = ("last name", "last_name", "lastname", "surname", "family name")
_EMAIL_HEADERS = ("email", "e-mail", "email address", "email_address", "mail")


def _pick(header: list[str], options: tuple[str, ...]) -> int | None:
    norm = [h.strip().lower().replace("-", " ") if h else "" for h in header]
    for opt in options:
        o = opt.replace("-", " ")
        if o in norm:
            return norm.index(o)
    return None


def read_roster(path: Path) -> dict[str, RosterEntry]:
    """Read `id,name,email` (header required; common header spellings accepted)."""
    fix_header = "the first line must be a header such as `id,name,email`"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("roster file not found", path=path,
                         fix="pass an existing CSV with --roster, or leave it out") from None
    except UnicodeDecodeError:
        raise InputError("roster is not UTF-8 text", path=path,
                         fix="export the roster as CSV UTF-8 from your spreadsheet") from None
    except OSError as e:
        raise InputError(f"cannot read roster: {e}", path=path,
                         fix="check the file permissions") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(c.strip() for c in rows[0]):
        raise InputError("roster is empty (line 1 has no header)", path=path, fix=fix_header)
    header = rows[0]
    i_id = _pick(header, _ID_HEADERS)
    if i_id is None:
        raise InputError(f"line 1: no student id column in header {header}", path=path,
                         fix=fix_header + " (id may also be `student_id` or `Student ID`)")
    i_name, i_email = _pick(header, _NAME_HEADERS), _pick(header, _EMAIL_HEADERS)
    i_first, i_last = _pick(header, _FIRST_HEADERS), _pick(header, _LAST_HEADERS)

    def cell(row: list[str], i: int | None) -> str:
        return row[i].strip() if i is not None and i < len(row) else ""

    out: dict[str, RosterEntry] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        sid = cell(row, i_id)
        if not sid:
            raise InputError(f"line {lineno}: the student id is empty", path=path,
                             fix=f"fill in the id on line {lineno} or delete the line")
        if sid in out:
            raise InputError(f"line {lineno}: student id {sid!r} appears twice", path=path,
                             fix="give every student one line with a unique id")
        name = cell(row, i_name) or " ".join(
            p for p in (cell(row, i_first), cell(row, i_last)) if p)
        email = cell(row, i_email)
        if email and "@" not in email:
            raise InputError(f"line {lineno}: {email!r} is not an email address", path=path,
                             fix=f"correct the email on line {lineno} or leave the cell empty")
        out[sid] = RosterEntry(sid, name or None, email or None)
    return out


def discover(class_dir: Path, roster: Path | None = None) -> Iterator[Submission]:
    """Every student's submission, sorted by id; roster students with nothing get files=().

    The folder and roster are checked before anything is returned, so input errors surface at the
    call, not halfway through a run."""
    if not class_dir.is_dir():
        raise InputError("class folder not found (or not a folder)", path=class_dir,
                         fix="pass the folder that holds the students' submissions")
    entries = read_roster(roster) if roster is not None else {}
    found = _scan(class_dir, roster)
    if not found and not entries:
        raise InputError("class folder has no submissions", path=class_dir,
                         fix="put one file or folder per student in it (or a Canvas/Moodle "
                             "download), or check you passed the right folder")
    # Match found ids to roster ids exactly, then case-insensitively (`Alice` vs `alice`).
    by_lower = {k.lower(): k for k in entries}
    match: dict[str, str] = {sid: sid for sid in found if sid in entries}
    for sid in found:
        rid = by_lower.get(sid.lower())
        if sid not in match and rid is not None and rid not in match.values():
            match[sid] = rid
    subs: list[Submission] = []
    for sid, a in found.items():
        r = entries.get(match.get(sid, ""))
        files = sorted(a.files)
        subs.append(Submission(
            student_id=r.student_id if r else sid,
            name=(r.name if r and r.name else a.name),
            email=r.email if r else None,
            files=tuple(files),
            names=tuple(a.files[f] for f in files),
            late=a.late,
            source=a.source,
        ))
    matched = set(match.values())
    subs += [Submission(student_id=r.student_id, name=r.name, email=r.email)
             for rid, r in entries.items() if rid not in matched]
    return iter(sorted(subs, key=lambda s: s.student_id))
