"""Find the students in a class folder and the files each one handed in.

Teachers get class folders in a handful of shapes (one file per student, one folder per student,
a Canvas or Moodle bulk download), so the layout is recognised per entry rather than configured.
Students are yielded sorted by id so every run sees them in the same order.

Students control their files, so only regular files inside the class folder are ever taken:
symbolic links are not followed, FIFOs, sockets and devices are not opened, a student's folder is
listed to a bounded depth and entry count, and folders grader wrote (holding grader's own
`outputs.OUTPUT_MARKER`; a file merely named so is noted, not obeyed) are never read. A file with
more than one hard link is refused when it is opened (`extract.load`: only the opened descriptor
tells it race-free). Each refused entry is kept in `Submission.skipped` with its reason, so
extraction flags the student (or notes it, when other files can be graded) instead of failing
the run.
Student ids are NFC-normalised, trimmed and made safe for a spreadsheet (`clean_id`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from grader.errors import InputError
from grader.escape import is_unprintable, printable
from grader.intake.limits import DEFAULT_LIMITS, Limits
from grader.outputs import OUTPUT_MARKER, is_grader_marker, is_output_folder

Source = Literal["file", "folder", "canvas", "moodle", "roster"]

# Files and folders that are never part of anyone's submission (names starting with "." too,
# which covers the store's `.grader/` and the output marker).
IGNORED_NAMES = frozenset({
    "__MACOSX", ".DS_Store", ".ipynb_checkpoints", "__pycache__", "Thumbs.db", "desktop.ini",
})
# The assignment's own files in the class-folder root.
ASSIGNMENT_FILES = frozenset({"rubric.yaml", "rubric.yml", "grader.toml", "roster.csv"})
# A folder of these names, alone in the folder passed, holds the class (not one student).
_CLASS_FOLDER_NAMES = frozenset({"submissions", "submission", "students", "class", "handins"})

# Canvas "Download Submissions" names every file `<prefix>_<attachment id>_<file name>` for an
# upload, `<prefix>_text.html` for a text entry and `<prefix>_link.html` for a URL; the prefix
# joins the sortable name lower-cased ("Kowalski, Kasia" -> `kowalskikasia`), `LATE` when late,
# and the Canvas user id (`anon_<anonymous id>` and no name under anonymous grading), with every
# non-word character removed (instructure/canvas-lms lib/content_zipper.rb: get_filename,
# add_upload_submission, add_text_or_url, sanitize_file_name). Older downloads kept `_` between
# last and first name (`smith_jane_12345_67890_answer.py`).
CANVAS_RE = re.compile(
    r"^(?:(?!LATE_)(?P<name>[^\W\d_]\w*?)_)?(?:(?P<late>LATE)_)?"
    r"(?:anon_(?P<anon>[A-Za-z0-9]+)|(?P<uid>\d+))"
    r"_(?:(?P<att>\d+)_(?P<file>.+)|(?P<kind>text|link)\.html)$"
)
# Moodle: folder `Full Name_12345_assignsubmission_file_` (or flat file `..._file_answer.py`).
# The number is the participant number of this assignment (Moodle's assign_user_mapping, also
# under blind marking, where the name is "Participant 12345"), not a user id: it is the student
# id here, and gradebook exports identify Moodle users from the roster instead.
MOODLE_RE = re.compile(
    r"^(?P<name>.+?)_(?P<uid>\d+)_assignsubmission_(?P<kind>[a-z]+)_(?P<rest>.*)$"
)
# A cell starting with one of these is a formula (or, with `'`, loses a character) in a
# spreadsheet; such an id gets a leading "_".
_SPREADSHEET_LEADS = ("'", "=", "+", "-", "@")
_LINK_SHOWN = 200  # characters of a link's target shown in its flag

_FIX_LINK = ("copy the real file into the class folder in place of the link (links are never "
             "followed), or grade this student by hand")
_FIX_SPECIAL = "replace it with a regular file holding the student's work, or remove it"
_FIX_UNLISTABLE = "make the folder readable (chmod -R u+rX FOLDER) and rerun"
_FIX_DEEP = "move the student's files nearer the top of their folder and rerun"
_FIX_MANY = ("remove generated folders (node_modules, venv, build output) from the student's "
             "folder and rerun")


class Skipped(BaseModel):
    """An entry of a submission that discovery refused to read, and why. `whole` marks a
    problem that flags the student even when other files could be read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: Path
    reason: str
    message: str
    fix: str
    whole: bool = False


class Submission(BaseModel):
    """One student's hand-in. `names` are display names parallel to `files` (relative to the
    submission, Canvas/Moodle prefixes removed); `files` is empty for a roster student who
    handed nothing in. `skipped` lists entries that were not read (links, special files...);
    `notes` what discovery noticed without refusing anything, for the teacher (a foreign
    `.grader-output` that did not hide the folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: str
    name: str | None = None
    email: str | None = None
    files: tuple[Path, ...] = ()
    names: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    notes: tuple[str, ...] = ()
    late: bool = False
    source: Source = "file"
    in_roster: bool | None = None  # None: no roster was given

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
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES or name.startswith("~$")


def clean_id(raw: str) -> str:
    """A student id from a file name, folder name or roster cell: NFC-normalised and trimmed.

    An id that needs more than that (control, bidi or invalid characters, each made `_`; a
    leading `'`, `=`, `+`, `-` or `@`, which a spreadsheet reads as a formula, prefixed with `_`)
    also gets `~` and 8 hex digits of its original's hash, so it can never merge with another
    student's id. The same raw text always gives the same id (roster and files still match)."""
    text = unicodedata.normalize("NFC", raw).strip()
    cleaned = "".join("_" if is_unprintable(ch) else ch for ch in text) or "_"
    if cleaned.startswith(_SPREADSHEET_LEADS):
        cleaned = "_" + cleaned
    if cleaned == text:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}~{digest}"


def link_target(path: Path) -> str:
    """Where a symbolic link points, as printable text (never what it points to)."""
    try:
        target = printable(os.readlink(path))
    except OSError as e:
        return f"unknown target: {e.strerror}"
    return target if len(target) <= _LINK_SHOWN else target[:_LINK_SHOWN] + "…"


def special_kind(mode: int) -> str:
    """What a non-regular, non-folder entry is, in words."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def symlink_skip(name: str, path: Path) -> Skipped:
    return Skipped(name=name, path=path, reason="symlink",
                   message=f"is a symbolic link to {link_target(path)!r}; links are not followed,"
                           " so nothing was read through it", fix=_FIX_LINK)


def foreign_marker_note(name: str) -> str:
    """The note for a `.grader-output` that grader did not write: before, any file of that name
    hid its folder, so a student holding one vanished from every output with no flag."""
    return (f"{name} is not the marker grader writes in its output folders, so it was ignored "
            "and this folder was graded as the student's work (delete the file if it is not "
            "needed)")


def special_skip(name: str, path: Path, mode: int) -> Skipped:
    return Skipped(name=name, path=path, reason="special_file",
                   message=f"is {special_kind(mode)}, not a regular file; it was not opened",
                   fix=_FIX_SPECIAL)


def _entry_mode(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return 0


def _walk(folder: Path, acc: _Acc, limits: Limits) -> bool:
    """Add the regular files under a student's `folder` to `acc`, iteratively (no recursion),
    to `limits.max_depth` levels and `limits.max_entries` entries. Returns True when the folder
    held folders grader wrote and nothing else (then it is not a student at all)."""
    stack: list[tuple[Path, str, int]] = [(folder, "", 0)]
    seen = 0
    outputs_only, saw_output = True, False
    while stack:
        here, rel, depth = stack.pop()
        listing: list[os.DirEntry[str]] = []
        try:
            with os.scandir(here) as it:
                for entry in it:
                    seen += 1
                    if seen > limits.max_entries:
                        acc.skipped.append(Skipped(
                            name=rel or folder.name, path=here, reason="too_many_files",
                            message=f"the student's folder holds more than "
                                    f"{limits.max_entries:,} files and folders", fix=_FIX_MANY,
                            whole=True))
                        return False
                    listing.append(entry)
        except OSError as e:
            acc.skipped.append(Skipped(
                name=rel or folder.name + "/", path=here, reason="unreadable",
                message=f"folder cannot be listed ({e.strerror or type(e).__name__})",
                fix=_FIX_UNLISTABLE))
            outputs_only = False
            continue
        marker = next((e for e in listing if e.name == OUTPUT_MARKER), None)
        if marker is not None:
            if is_grader_marker(Path(marker.path)):
                saw_output = True  # reports grader wrote
                continue
            acc.notes.append(foreign_marker_note(rel + OUTPUT_MARKER))
        outputs_only = outputs_only and all(
            is_ignored(e.name) or e.is_dir(follow_symlinks=False) for e in listing)
        subfolders: list[tuple[Path, str, int]] = []
        for entry in sorted(listing, key=lambda e: e.name):
            if is_ignored(entry.name):
                continue
            name, path = rel + printable(entry.name), Path(entry.path)
            if entry.is_symlink():
                acc.skipped.append(symlink_skip(name, path))
            elif entry.is_dir(follow_symlinks=False):
                if depth >= limits.max_depth:
                    outputs_only = False
                    acc.skipped.append(Skipped(
                        name=name + "/", path=path, reason="too_deep",
                        message=f"folder is nested more than {limits.max_depth} levels deep in "
                                "the student's folder; it was not read", fix=_FIX_DEEP))
                else:
                    subfolders.append((path, name + "/", depth + 1))
            elif entry.is_file(follow_symlinks=False):
                acc.files[path] = name
            else:
                acc.skipped.append(special_skip(name, path, _entry_mode(entry)))
        stack.extend(reversed(subfolders))
    return saw_output and outputs_only


def _canvas_name(raw: str | None) -> str | None:
    """The name part of a Canvas download name, kept readable: `smith_jane` (older downloads)
    -> "Jane Smith"; Canvas' squashed `kowalskikasia` is kept as Canvas wrote it (it cannot be
    split reliably; a roster gives the real name)."""
    if not raw:
        return None
    parts = [p for p in raw.split("_") if p]
    if len(parts) < 2:
        return printable(raw)
    parts = parts[1:] + parts[:1]
    return printable(" ".join(p[:1].upper() + p[1:] for p in parts))


def _canvas(raw: str) -> tuple[str, str | None, bool, str] | None:
    """(student id, name, late, file name) of a Canvas download name, or None."""
    m = CANVAS_RE.match(raw)
    if m is None:
        return None
    sid = f"anon_{m['anon']}" if m["anon"] else m["uid"]
    name = None if m["anon"] else _canvas_name(m["name"])
    return sid, name, bool(m["late"]), m["file"] or f"{m['kind']}.html"


# File-type extensions a flat file's id never ends in: `alice.py.txt` is alice
_TYPE_SUFFIXES = frozenset({
    ".py", ".txt", ".md", ".markdown", ".pdf", ".docx", ".doc", ".odt", ".rtf", ".ipynb",
    ".html", ".htm", ".java", ".c", ".h", ".cpp", ".js", ".ts", ".r", ".sql", ".json", ".csv",
    ".tex", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".zip"})


def _flat_id(raw: str) -> str:
    """A flat file's student id: its name without its file-type extensions. `john.doe.py` is
    john.doe (never john), `alice.py.txt` is alice."""
    stem = raw.rsplit(".", 1)[0] if "." in raw[1:] else raw
    while "." in stem[1:] and f".{stem.rsplit('.', 1)[1].lower()}" in _TYPE_SUFFIXES:
        stem = stem.rsplit(".", 1)[0]
    return stem or raw


def _is_assignment_file(entry: os.DirEntry[str], roster: Path | None) -> bool:
    name = entry.name.lower()
    if name in ASSIGNMENT_FILES or name == "readme" or name.startswith("readme."):
        return True
    if roster is None or not entry.is_file(follow_symlinks=False):
        return False
    try:
        return os.path.samefile(entry.path, roster)
    except OSError:
        return False


def _one_student(folder: Path, files: Mapping[Path, str], class_dir: Path) -> None:
    """Refuse a student folder whose own files carry the LMS download names of several
    students (a Canvas or Moodle download unpacked into a folder of the class folder): graded
    as it is, their work would be one student's."""
    ids: set[str] = set()
    for path in files:
        if path.parent != folder:
            continue
        raw = unicodedata.normalize("NFC", path.name)
        if m := MOODLE_RE.match(raw):
            ids.add(m["uid"])
        elif canvas := _canvas(raw):
            ids.add(canvas[0])
    if len(ids) > 1:
        raise InputError(f"the folder {folder.name}/ holds the files of {len(ids)} students "
                         "(named as a Canvas or Moodle download names them): graded as it "
                         "is, their work would be one student's", path=class_dir,
                         fix=f"move the files of {folder.name}/ up into {class_dir}, or "
                             f"pass {folder} as the class folder")


def _scan(class_dir: Path, roster: Path | None, limits: Limits,
          reserved: set[str]) -> dict[str, _Acc]:
    found: dict[str, _Acc] = {}

    def acc(raw_id: str, source: Source, name: str | None = None) -> _Acc:
        a = found.setdefault(clean_id(raw_id), _Acc(source=source, name=name))
        if a.name is None:
            a.name = name
        return a

    try:
        with os.scandir(class_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise InputError(f"class folder cannot be listed ({e.strerror or e})", path=class_dir,
                         fix="check the folder's permissions (chmod u+rx) and rerun") from None
    for entry in entries:
        if (is_ignored(entry.name) or _is_assignment_file(entry, roster)
                or entry.name in reserved):
            continue
        raw, path = unicodedata.normalize("NFC", entry.name), Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            m = MOODLE_RE.match(raw)
            sid = m["uid"] if m else raw
            a = acc(sid, "moodle", printable(m["name"]).strip()) if m else acc(sid, "folder")
            if _walk(path, a, limits) and not a.files and not a.skipped:
                found.pop(clean_id(sid))  # only reports grader wrote
                continue
            _one_student(path, a.files, class_dir)
            continue
        if m := MOODLE_RE.match(raw):
            a = acc(m["uid"], "moodle", printable(m["name"]).strip())
            name = printable(m["rest"] or raw)
        elif canvas := _canvas(raw):
            a, name = acc(canvas[0], "canvas", canvas[1]), printable(canvas[3])
            a.late = a.late or canvas[2]
        else:
            a, name = acc(_flat_id(raw), "file"), printable(raw)
        if entry.is_symlink():
            a.skipped.append(symlink_skip(name, path))
        elif entry.is_file(follow_symlinks=False):
            a.files[path] = name
        else:
            a.skipped.append(special_skip(name, path, _entry_mode(entry)))
    return found


@dataclass(frozen=True)
class RosterEntry:
    """One roster line. `ids`: the student's other identifiers found in the roster, by kind
    (`username`, `idnumber`, `sis_user_id`, `sis_login_id`, `canvas_id`, `section`), for
    gradebook exports."""

    student_id: str
    name: str | None
    email: str | None
    ids: dict[str, str] = field(default_factory=dict)


_ID_HEADERS = ("id", "student_id", "studentid", "student id", "student number", "student_number",
               "user_id", "userid", "sis user id", "sis_user_id", "login_id", "username", "login")
_NAME_HEADERS = ("name", "full name", "full_name", "student name", "student_name", "student",
                 "display name")
_FIRST_HEADERS = ("first name", "first_name", "firstname", "given name")
_LAST_HEADERS = ("last name", "last_name", "lastname", "surname", "family name")
_EMAIL_HEADERS = ("email", "e-mail", "email address", "email_address", "mail")
# Other identifiers an LMS import matches on (Moodle: username, ID number; Canvas: ID, SIS ids).
_OTHER_IDS: dict[str, tuple[str, ...]] = {
    "username": ("username", "user name", "login", "login_id", "login id"),
    "idnumber": ("id number", "idnumber", "id_number", "student number", "student_number"),
    "sis_user_id": ("sis user id", "sis_user_id"),
    "sis_login_id": ("sis login id", "sis_login_id"),
    "canvas_id": ("canvas id", "canvas_id", "canvas user id"),
    "section": ("section", "sections"),
}
# A Canvas gradebook export (Grades > Export) works as a roster: its `ID` column is the Canvas
# user id, its second row holds the points possible and an optional row marks muted assignments
# (instructure/canvas-lms lib/gradebook_exporter.rb); "Student, Test" is Canvas' test student.
_CANVAS_SKIP = re.compile(r"^\s*(Points Possible|Muted|Manual Posting.*)?\s*$", re.I)
_CANVAS_TEST_STUDENT = "Student, Test"


def _pick(header: list[str], options: tuple[str, ...]) -> int | None:
    norm = [h.strip().lower().replace("-", " ") if h else "" for h in header]
    for opt in options:
        o = opt.replace("-", " ")
        if o in norm:
            return norm.index(o)
    return None


def _delimiter(text: str) -> str:
    """The delimiter the roster's header uses: `,`, or `;` (what Excel writes in locales
    whose decimal mark is a comma), or a tab."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_roster(path: Path) -> dict[str, RosterEntry]:
    """Read `id,name,email` (header required; common header spellings accepted; separated by
    commas, semicolons or tabs, as the header is)."""
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
    rows = list(csv.reader(text.splitlines(), delimiter=_delimiter(text)))
    if not rows or not any(c.strip() for c in rows[0]):
        raise InputError("roster is empty (line 1 has no header)", path=path, fix=fix_header)
    header = rows[0]
    i_id = _pick(header, _ID_HEADERS)
    if i_id is None:
        raise InputError(f"line 1: no student id column in header {header}", path=path,
                         fix=fix_header + " (id may also be `student_id` or `Student ID`)")
    i_name, i_email = _pick(header, _NAME_HEADERS), _pick(header, _EMAIL_HEADERS)
    i_first, i_last = _pick(header, _FIRST_HEADERS), _pick(header, _LAST_HEADERS)
    others = {kind: i for kind, names in _OTHER_IDS.items()
              if (i := _pick(header, names)) is not None}
    canvas = "sis_login_id" in others and header[i_id].strip() == "ID"
    if canvas:
        others["canvas_id"] = i_id

    def cell(row: list[str], i: int | None) -> str:
        return row[i].strip() if i is not None and i < len(row) else ""

    out: dict[str, RosterEntry] = {}
    folded: dict[str, str] = {}  # each id case-folded: the first id of that spelling
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if canvas and (cell(row, i_name) == _CANVAS_TEST_STUDENT or all(
                _CANVAS_SKIP.match(c) for c in row[:i_id + 1])):
            continue
        sid = clean_id(cell(row, i_id)) if cell(row, i_id) else ""
        if not sid:
            raise InputError(f"line {lineno}: the student id is empty", path=path,
                             fix=f"fill in the id on line {lineno} or delete the line")
        if sid in out:
            raise InputError(f"line {lineno}: student id {sid!r} appears twice", path=path,
                             fix="give every student one line with a unique id")
        twin = folded.setdefault(sid.casefold(), sid)
        if twin != sid:  # a file `JSmith.txt` would go to either of them
            raise InputError(f"line {lineno}: student id {sid!r} differs from {twin!r} only in "
                             "upper and lower case, so a file named for one of them could "
                             "be the other's", path=path,
                             fix="give the two students ids that differ in more than case")
        name = cell(row, i_name) or " ".join(
            p for p in (cell(row, i_first), cell(row, i_last)) if p)
        email = cell(row, i_email)
        if email and "@" not in email:
            raise InputError(f"line {lineno}: {email!r} is not an email address", path=path,
                             fix=f"correct the email on line {lineno} or leave the cell empty")
        ids = {kind: printable(v) for kind, i in others.items() if (v := cell(row, i))}
        out[sid] = RosterEntry(sid, printable(name) or None, printable(email) or None, ids)
    return out


def _squash(text: str) -> str:
    """Like Canvas' download names: lower case, word characters only."""
    return re.sub(r"[\W_]+", "", text.casefold())


def _contradicts(a: _Acc, entry: RosterEntry) -> bool:
    """An LMS download's name and the roster's name for its id share no form."""
    return (a.source in ("canvas", "moodle") and bool(a.name) and bool(entry.name)
            and not _name_keys(a.name) & _name_keys(entry.name))


def _name_keys(name: str | None) -> set[str]:
    """Ways a name may appear in a download name: as written ("Ana María López"), squashed,
    and squashed last-name-first ("Kasia Kowalski" -> `kowalskikasia`, as Canvas writes it)."""
    if not name or not name.strip():
        return set()
    words = re.findall(r"\w+", name.casefold())
    keys = {_squash(name)}
    if "," in name:  # "Kowalski, Kasia": Canvas' sortable name
        keys.add(_squash(name.replace(",", " ")))
    elif len(words) > 1:
        keys.add(_squash("".join(words[-1:] + words[:-1])))
    return {k for k in keys if k}


OUTPUT_PAGES = frozenset({"students", "handouts"})  # the folders of pages a run writes


def check_class_folder(class_dir: Path) -> None:
    """Refuse a folder that is plainly not the class, before anything is read or paid: grader's
    own output folder or a folder inside it, the assignment folder `grade init` makes (the
    assignment's own files beside a `submissions/` folder), or a folder whose only entry is a
    folder that holds the class."""
    here = class_dir.resolve()
    written = here if is_output_folder(here) else (
        here.parent if here.name in OUTPUT_PAGES and is_output_folder(here.parent) else None)
    if written is not None:  # grader's reports, or their `students/` or `handouts/` pages
        raise InputError(f"this is {'' if written == here else 'inside '}grader's output "
                         f"folder {written} (the reports of a run), not a class folder",
                         path=class_dir,
                         fix="pass the folder that holds the students' submissions (the class "
                             "whose reports these are is named in its report.html)")
    try:
        names = [e.name for e in os.scandir(class_dir) if not is_ignored(e.name)]
    except OSError:
        return  # discovery says why the folder cannot be read
    own = sorted(set(names) & ASSIGNMENT_FILES)
    meant: Path | None = None
    if own and "submissions" in names and (class_dir / "submissions").is_dir():
        meant = class_dir / "submissions"
        why = (f"it holds the assignment's own files ({', '.join(own)}) and a submissions/ "
               "folder: the students' work is in submissions/")
    elif len(names) == 1 and (class_dir / names[0]).is_dir() and not is_output_folder(
            class_dir / names[0]) and (names[0].casefold() in _CLASS_FOLDER_NAMES
                                       or (class_dir / names[0] / "roster.csv").is_file()):
        meant = class_dir / names[0]
        why = (f"its only entry is the folder {names[0]}/, which looks like the class (graded "
               "as it is, every file in it would be one student's)")
    if meant is not None:
        raise InputError(f"this does not look like the class folder: {why}", path=class_dir,
                         fix=f"pass {meant} instead (e.g. `grade run {meant}`)")


def discover(class_dir: Path, roster: Path | None = None, *,
             limits: Limits = DEFAULT_LIMITS,
             assignment: Iterable[Path] = ()) -> Iterator[Submission]:
    """Every student's submission, sorted by id; roster students with nothing get files=().
    `assignment`: more of the assignment's own files (the rubric's reference files): the entry
    of the class-folder root that holds one (the file, or its top folder) is nobody's.

    The folder and roster are checked before anything is returned, so input errors surface at the
    call, not halfway through a run. Roster ids go through `clean_id` like file names, so an NFD
    file name (`jose\u0301.py`, as macOS writes it) matches the roster's NFC `josé`."""
    if not class_dir.is_dir():
        raise InputError("class folder not found (or not a folder)", path=class_dir,
                         fix="pass the folder that holds the students' submissions")
    entries = read_roster(roster) if roster is not None else {}
    root = class_dir.resolve()
    reserved = {f.resolve().relative_to(root).parts[0] for f in assignment
                if f.resolve().is_relative_to(root) and f.resolve() != root}
    found = _scan(class_dir, roster, limits, reserved)
    if not found and not entries:
        raise InputError("class folder has no submissions", path=class_dir,
                         fix="put one file or folder per student in it (or a Canvas/Moodle "
                             "download), or check you passed the right folder")
    # Match found ids to roster ids exactly, then case-insensitively (`Alice` vs `alice`). An
    # LMS download whose name contradicts the roster's name for that id (a Moodle participant
    # number that happens to be another student's roster id) waits: its name decides first.
    by_fold = {k.casefold(): k for k in entries}
    match: dict[str, str] = {}
    matched: set[str] = set()
    doubted: dict[str, str] = {}
    for table, fold in (({k: k for k in entries}, False), (by_fold, True)):
        for sid in found:
            rid = table.get(sid.casefold() if fold else sid)
            if rid is None or sid in match or sid in doubted or rid in matched:
                continue
            if _contradicts(found[sid], entries[rid]):
                doubted[sid] = rid
            else:
                match[sid] = rid
                matched.add(rid)
    # LMS downloads whose number is not a roster id (a Moodle participant number, a Canvas user
    # id with a roster of SIS ids): match by name when exactly one roster name fits.
    by_name: dict[str, list[str]] = {}
    for roster_id, entry in entries.items():
        for key in _name_keys(entry.name):
            by_name.setdefault(key, []).append(roster_id)
    for sid, a in found.items():
        if sid in match or a.source not in ("canvas", "moodle") or not a.name:
            continue
        cands = {c for key in _name_keys(a.name) for c in by_name.get(key, ())}
        if len(cands) == 1 and (only := cands.pop()) not in matched:
            match[sid] = only
            matched.add(only)
    for sid, rid in doubted.items():  # no roster name fits: the id match stands after all
        if sid not in match and rid not in matched:
            match[sid] = rid
            matched.add(rid)
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
            skipped=tuple(a.skipped),
            notes=tuple(a.notes),
            late=a.late,
            # where the id came from: the roster's id replaces the one found (matched by
            # name or case), so an LMS number is never taken for the roster's id or back
            source=a.source if r is None or r.student_id == sid else "roster",
            in_roster=(r is not None) if roster is not None else None,
        ))
    subs += [Submission(student_id=r.student_id, name=r.name, email=r.email, in_roster=True)
             for rid, r in entries.items() if rid not in matched]
    return iter(sorted(subs, key=lambda s: s.student_id))
