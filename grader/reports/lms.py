"""What the LMS importers expect, and who each student is to them.

Canvas (instructure/canvas-lms `lib/gradebook_importer.rb`, read for this module):
- the header row must start `Student, ID` and its student columns end with `Section`; with
  `SIS User ID, SIS Login ID` between them (`update_column_count`);
- a student row is matched by `ID` (the Canvas user id) first, then by SIS User ID or SIS Login
  ID, then by name (`process_student`); an unknown row becomes a "new" student;
- an assignment column titled `Title (123)` updates assignment 123; a title without an id is
  matched by title or creates a new assignment (`parse_assignments`, `Assignment.title_and_id`:
  the id is a trailing " (digits)");
- a column whose header contains "Current Score", "Final Grade" and the like is dropped
  (`NON_ASSIGNMENT_COLUMN_HEADERS`, matched anywhere in the header, case-sensitive);
- the `Points Possible` row sets the assignment's points (`process_pp`);
- an empty grade where Canvas has one is a change (`no_change_to_value?`), so withheld students
  are left out of the file rather than sent empty.
The gradebook export the teacher downloads (Grades > Export, `lib/gradebook_exporter.rb`) has
exactly those columns, so its rows give each student's ids and the assignment's exact header.

Moodle (`grade/import/csv/classes/load_data.php` and docs.moodle.org "Grade import"): the teacher
maps one CSV column to one user field (`userid`, `username`, `useridnumber`, `useremail`);
a row whose value matches no user aborts the whole import (`usermappingerrorusernotfound`);
an empty grade sets "no grade"; grades above 100 need the site's unlimitedgrades setting
(`insert_grade_record`); e-mail addresses are matched case-sensitively (docs). Participant
numbers in Moodle's download names are not user ids.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from grader.errors import InputError
from grader.intake.discover import RosterEntry

# lib/gradebook_importer.rb NON_ASSIGNMENT_COLUMN_HEADERS (also matches "Unposted …").
CANVAS_DROPPED = ("Current Score", "Current Points", "Current Grade", "Final Score",
                  "Final Points", "Final Grade", "Override Score", "Override Grade",
                  "Override Status")
CANVAS_RESERVED = ("Student", "LastName", "FirstName", "ID", "SIS User ID", "SIS Login ID",
                   "Section", "Integration ID", "Root Account")
_TITLE_AND_ID = re.compile(r"\A(.*)\s\((\d+)\)\Z", re.S)
_NON_STUDENT = re.compile(r"^\s*(Muted|Manual Posting.*)?\s*$", re.I)
MOODLE_IDS = {"email": "Email address", "username": "Username", "idnumber": "ID number"}
MOODLE_MAX_DEFAULT = 100.0  # grades above it need Moodle's unlimitedgrades site setting

_FIX_GRADEBOOK = ("in Canvas open Grades > Export > Export Entire Gradebook, and pass the file "
                  "with --canvas-gradebook")


def canvas_title_problems(header: str) -> list[str]:
    """Why Canvas would not import an assignment column titled `header` as we mean it."""
    out = [f"the column title {header!r} contains {d!r}: Canvas drops such columns on import"
           for d in CANVAS_DROPPED if d in header]
    if header in CANVAS_RESERVED:
        out.append(f"the column title {header!r} is one of Canvas' student columns")
    return out


@dataclass(frozen=True)
class CanvasRow:
    name: str
    id: str
    sis_user_id: str
    sis_login_id: str
    section: str


@dataclass(frozen=True)
class CanvasGradebook:
    header: str  # the assignment's column title, exactly as Canvas wrote it: "Title (123)"
    points: str | None  # its Points Possible cell
    rows: list[CanvasRow]


def read_canvas_gradebook(path: Path, title: str, choice: str | None) -> CanvasGradebook:
    """The student rows of a Canvas gradebook export and the assignment column to fill: the one
    `choice` names (id or title), else the one titled like `title` (the rubric's), even when it
    is the only one: grades are never written into another assignment's column unasked."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the Canvas gradebook: {e}", path=path,
                         fix=_FIX_GRADEBOOK) from None
    rows = list(csv.reader(text.splitlines()))
    head = rows[0] if rows else []
    col = {h.strip(): i for i, h in enumerate(head)}
    if len(head) < 4 or "Student" not in head[0] or "ID" not in col or "Section" not in col:
        raise InputError("not a Canvas gradebook export (its first row must start with "
                         "Student, ID and include Section)", path=path, fix=_FIX_GRADEBOOK)
    assignments = {i: h for i, h in enumerate(head) if i > col["Section"]
                   and _TITLE_AND_ID.match(h.strip()) and not canvas_title_problems(h)}
    pick = _choose(assignments, title, choice, path)
    points = None
    out: list[CanvasRow] = []
    for row in rows[1:]:
        cells = [c.strip() for c in row] + [""] * (len(head) - len(row))
        if cells[0].startswith("Points Possible"):
            points = cells[pick]
            continue
        if not any(cells) or all(_NON_STUDENT.match(c) for c in cells):
            continue
        out.append(CanvasRow(
            name=cells[0], id=cells[col["ID"]],
            sis_user_id=cells[col["SIS User ID"]] if "SIS User ID" in col else "",
            sis_login_id=cells[col["SIS Login ID"]] if "SIS Login ID" in col else "",
            section=cells[col["Section"]]))
    return CanvasGradebook(header=head[pick].strip(), points=points, rows=out)


def _choose(assignments: dict[int, str], title: str, choice: str | None, path: Path) -> int:
    def key(h: str) -> tuple[str, str]:
        m = _TITLE_AND_ID.match(h.strip())
        return (m[1].strip().casefold(), m[2]) if m else (h.casefold(), "")

    if not assignments:
        raise InputError("the Canvas gradebook has no assignment column (`Title (id)`)",
                         path=path, fix="create the assignment in Canvas, then export the "
                                        "gradebook again")
    listed = "; ".join(assignments.values())
    if choice is not None:
        want = choice.strip().casefold()
        hits = [i for i, h in assignments.items()
                if want in (h.strip().casefold(), *key(h))]
        if len(hits) != 1:
            raise InputError(f"--canvas-assignment {choice!r} matches {len(hits)} columns of "
                             f"the gradebook ({listed})", path=path,
                             fix="pass the assignment's id (the number in brackets)")
        return hits[0]
    hits = [i for i, h in assignments.items() if key(h)[0] == title.strip().casefold()]
    if len(hits) == 1:
        return hits[0]
    if len(assignments) == 1:  # another assignment's grades would be overwritten
        (only,) = assignments.values()
        raise InputError(f"the Canvas gradebook's only assignment is {only!r}, which is not "
                         f"titled like the rubric ({title!r})", path=path,
                         fix=f"pass --canvas-assignment {key(only)[1] or repr(only)} if these "
                             "grades are for it; else create the assignment in Canvas and "
                             "export the gradebook again")
    raise InputError(f"the Canvas gradebook has {len(assignments)} assignments and none is "
                     f"titled like the rubric ({title!r}): {listed}", path=path,
                     fix="pass --canvas-assignment with the assignment's id or title")


def _name_forms(name: str | None) -> set[str]:
    if not name:
        return set()
    n = " ".join(name.split()).casefold()
    forms = {n}
    if "," in n:
        last, _, first = n.partition(",")
        forms.add(f"{first.strip()} {last.strip()}")
    elif " " in n:
        first, _, last = n.rpartition(" ")
        forms.add(f"{last}, {first}")
    return forms


class CanvasMatcher:
    """Finds a student's gradebook row the way Canvas itself matches: Canvas user id, then SIS
    User ID, then SIS Login ID, then a name that fits exactly one row. A student whose own
    Canvas or SIS id is known (the roster, a Canvas download's name) and in no row is not
    matched by name: that row is a namesake (another section, another course)."""

    def __init__(self, rows: list[CanvasRow]):
        self.by_id = {r.id: r for r in rows if r.id}
        self.by_sis = {r.sis_user_id: r for r in rows if r.sis_user_id}
        self.by_login = {r.sis_login_id: r for r in rows if r.sis_login_id}
        self.by_name: dict[str, list[CanvasRow]] = {}
        for r in rows:
            for form in _name_forms(r.name):
                self.by_name.setdefault(form, []).append(r)

    def match(self, sid: str, name: str | None, email: str | None, source: str | None,
              roster: RosterEntry | None) -> CanvasRow | None:
        ids = roster.ids if roster else {}
        canvas_id = ids.get("canvas_id") or (sid if source == "canvas" and sid.isdigit()
                                             else None)
        if canvas_id and canvas_id in self.by_id:
            return self.by_id[canvas_id]
        for key in (ids.get("sis_user_id"), sid):
            if key and key in self.by_sis:
                return self.by_sis[key]
        for key in (ids.get("sis_login_id"), ids.get("username"), email, sid):
            if key and key in self.by_login:
                return self.by_login[key]
        if canvas_id or ids.get("sis_user_id") or ids.get("sis_login_id"):
            return None  # their own ids are not in this gradebook: a namesake is someone else
        forms = _name_forms(name) | _name_forms(roster.name if roster else None)
        named = {id(r): r for f in forms for r in self.by_name.get(f, ())}
        return next(iter(named.values())) if len(named) == 1 else None


def roster_row(sid: str, source: str | None, roster: RosterEntry | None) -> CanvasRow | None:
    """Canvas ids without a gradebook: the Canvas user id from a Canvas download name or the
    roster, SIS ids and section from the roster; None when Canvas could match only by name."""
    ids = roster.ids if roster else {}
    canvas_id = ids.get("canvas_id") or (sid if source == "canvas" and sid.isdigit() else "")
    row = CanvasRow(name="", id=canvas_id, sis_user_id=ids.get("sis_user_id", ""),
                    sis_login_id=ids.get("sis_login_id", ""), section=ids.get("section", ""))
    return row if (row.id or row.sis_user_id or row.sis_login_id) else None


def moodle_identifier(kind: str, roster: RosterEntry | None) -> str | None:
    """The student's value for the Moodle user field `kind`, as the roster has it."""
    if roster is None:
        return None
    return roster.email if kind == "email" else roster.ids.get(kind)
