"""HTML reports: the class overview (report.html) and two pages per student.

`students/<id>.html` is the teacher view (flags, the model's values beside the teacher's,
internal ids, the private note); `handouts/<id>.html` is the student view, printable and
without any of those, to hand out: written for a grade that may leave (the gradebook exports'
rule) once a teacher reviewed or approved it (`FinalStudent.handout`), so a flagged or
unreviewed grade is never handed out by mistake; with `handouts="all"`, for every grade that may
leave, each one not yet reviewed stamped so on the page. Both show
the submission's text as it was graded, with every evidence quote marked where it occurs
(`evidence.py`).

Jinja2 with autoescape on and a Content-Security-Policy that forbids scripts, so student or model
text can never run in the teacher's browser. Self-contained: inline CSS, inline SVG charts.
One compiled template renders all student pages.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from grader import __version__
from grader.grading.records import Run
from grader.outputs import mark_output_folder
from grader.prompting.rubric import Rubric
from grader.quality.evaluation import ClassEval, confusion_text
from grader.reports.evidence import Quote, from_parts, locate
from grader.reports.stats import (
    Agreement,
    Bin,
    CriterionStats,
    fmt_num,
    hardest,
    histogram,
    run_cost,
    summarize,
)
from grader.review.final import FinalStudent, HandoutMode, review_queue
from grader.store import Store

TEMPLATES = Path(__file__).parent / "templates"
# An id made only of these (and not starting with ".") is its own page name; every other id gets
# a slug plus 32 hex digits of its hash. Plain names never contain "-" and hashed ones always do,
# so two different ids never share a page, on case-insensitive file systems too.
_PLAIN_ID = re.compile(r"^[a-z0-9_][a-z0-9_.]{0,79}$")
_SLUG_DROP = re.compile(r"[^a-z0-9_.]+")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$")
# The pages this tool wrote last time, one file name a line, inside students/ (and handouts/):
# the only files a later run ever deletes there.
PAGES_MANIFEST = ".grader-pages"


def environment() -> Environment:
    # auto_reload off: templates do not change during a run, and checking their mtime on every
    # page (the student page extends the base) cost a stat call per page.
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, auto_reload=False,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(fmt=fmt_num, pct=_pct, version=__version__)
    env.filters["num"] = fmt_num  # a filter is called directly; a global goes through Context.call
    return env


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{100.0 * share:.0f}%"


def student_filename(student_id: str) -> str:
    """The page name of a student: `alice.html` for a plain lower-case id, else a slug and a hash
    (`jos_smith-<32 hex>.html`); never the same for two ids."""
    if _PLAIN_ID.match(student_id) and not _WINDOWS_RESERVED.match(student_id):
        return student_id + ".html"
    slug = _SLUG_DROP.sub("_", student_id.lower()).strip("._")[:40] or "student"
    digest = hashlib.sha256(student_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{slug}-{digest}.html"


def _submission(store: Store, s: FinalStudent) -> dict[bool, dict[str, Any]]:
    """Each view's part of the page (True: the teacher's, False: the student's): the submission,
    its text segments with evidence marked, the quotes numbered per criterion, and which graded
    examples the model was shown beside it (listed on the teacher view only; their text is
    never on a page). A quote not found word for word in the text is the model's words, not the
    student's: the teacher's view lists it, noted; the student's leaves it out."""
    gid = s.result.grade_id
    sent = store.sent_text(s.result.submission_id, gid) if s.result.submission_id else None
    sub = from_parts(sent.parts if sent else None, shared=bool(sent and not sent.own),
                     redaction=sent.redaction if sent else None)
    quotes = [(c.criterion.id, q) for c in s.criteria for q in c.evidence]
    if sub.text is not None:
        segments, listed = locate(sub.text, quotes)
    else:
        segments, listed = [], [Quote(n, cid, q, False)
                                for n, (cid, q) in enumerate(quotes, start=1)]
    teacher = {"submission": sub, "segments": segments,
               "quotes_by_criterion": _by_criterion(listed),
               "examples": store.grade_exemplars(gid) if gid else []}
    if sub.text is None or all(q.found for q in listed):
        return {True: teacher, False: teacher}
    segments, listed = locate(sub.text, [(q.criterion_id, q.text) for q in listed if q.found])
    return {True: teacher, False: {**teacher, "segments": segments,
                                   "quotes_by_criterion": _by_criterion(listed)}}


def _by_criterion(listed: Sequence[Quote]) -> dict[str, list[Quote]]:
    out: dict[str, list[Quote]] = {}
    for q in listed:
        out.setdefault(q.criterion_id, []).append(q)
    return out


def _read_manifest(pages: Path) -> set[str]:
    try:
        text = (pages / PAGES_MANIFEST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return {line for line in text.splitlines() if line.endswith(".html") and "/" not in line}


def _remove_stale_pages(pages: Path, keep: set[str]) -> None:
    """Delete the pages this tool wrote before (listed in the manifest) that this run did not
    write, then record this run's pages. Files grader did not write are never touched."""
    for name in sorted(_read_manifest(pages) - keep):
        old = pages / name
        if old.is_file() and not old.is_symlink():
            old.unlink()
    tmp = pages / (PAGES_MANIFEST + ".tmp")
    tmp.write_text("".join(f"{n}\n" for n in sorted(keep)), encoding="utf-8")
    tmp.replace(pages / PAGES_MANIFEST)


@dataclass
class Chart:
    width: int
    height: int
    left: int
    base: int
    color: str
    bars: list[dict[str, Any]]


def bar_chart(bins: Sequence[Bin], width: int = 340, height: int = 150,
              color: str = "#4a7ab0") -> Chart:
    left, top, bottom = 6, 16, 18
    base = height - bottom
    slot = (width - left - 6) / max(len(bins), 1)
    peak = max((b.count for b in bins), default=0) or 1
    bars = []
    for i, b in enumerate(bins):
        h = round((base - top) * b.count / peak, 1)
        x = round(left + i * slot + slot * 0.1, 1)
        bars.append({"x": x, "y": round(base - h, 1), "w": round(slot * 0.8, 1), "h": h,
                     "cx": round(x + slot * 0.4, 1), "label": b.label, "count": b.count})
    return Chart(width, height, left, base, color, bars)


def _row(s: FinalStudent) -> dict[str, Any]:
    r = s.result
    return {"student_id": r.student_id, "name": r.name or "", "href": "students/"
            + student_filename(r.student_id), "total": s.final_total, "percent": s.final_percent,
            "band": s.band or "", "status": r.status + (" (review)" if r.needs_review else ""),
            "flagged": s.flagged, "flags": r.flags, "review_status": s.review_status,
            "uncertainty": s.uncertainty if r.samples > 1 else None}


def _wall_time(run: Run) -> str:
    try:
        start = datetime.fromisoformat(run.started_at)
        end = datetime.fromisoformat(run.finished_at) if run.finished_at else None
    except (TypeError, ValueError):
        return "–"
    if end is None:
        return "unfinished"
    secs = int((end - start).total_seconds())
    return f"{secs // 3600}h {secs % 3600 // 60:02d}m {secs % 60:02d}s"


def render_report(env: Environment, store: Store, run_id: int, rubric: Rubric,
                  students: Sequence[FinalStudent], stats: Sequence[CriterionStats],
                  agreement: Sequence[Agreement], human: ClassEval | None = None) -> str:
    run = store.run(run_id)
    usage = store.usage(run_id)
    percents = [p for s in students if (p := s.final_percent) is not None]
    totals = summarize(percents)
    review_counts = Counter(s.review_status for s in students)
    colors = {"approved": "#067647", "reviewed": "#4a7ab0", "needs review": "#b42318",
              "pending": "#c4cdd5"}
    parts, x, n = [], 0.0, max(len(students), 1)
    for label in ("approved", "reviewed", "needs review", "pending"):
        w = 600 * review_counts.get(label, 0) / n
        parts.append({"label": label, "count": review_counts.get(label, 0), "x": round(x, 1),
                      "w": round(w, 1), "color": colors[label]})
        x += w
    band_counts = Counter(s.band for s in students if s.band)
    bands = [(name, band_counts.get(name, 0)) for name, _ in
             sorted(rubric.grade_bands.items(), key=lambda kv: -kv[1])]
    rows = [_row(s) for s in students]
    cost = run_cost(store, run, usage)
    return env.get_template("report.html.j2").render(
        rubric=rubric, run=run, usage=usage, cost=cost,
        wall_time=_wall_time(run), generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        counts={"students": len(students),
                "graded": sum(1 for s in students if s.result.status == "graded"),
                "flagged": sum(1 for s in students if s.flagged)},
        totals=totals, total_chart=bar_chart(histogram(percents, 100.0), width=640, height=190),
        bands=bands,
        criteria=[{"stats": c, "chart": bar_chart(c.distribution)} for c in stats],
        hardest=hardest(stats), rows=rows,
        flagged=[_row(s) for s in review_queue(students) if s.flagged],
        sampled=any(s.result.samples > 1 for s in students),
        review={"parts": parts}, agreement=agreement,
        reviewed_count=sum(1 for s in students if s.reviewed or s.has_overrides),
        human=human, confusion=confusion_text,
    )


def write_html(store: Store, run_id: int, rubric: Rubric, students: Sequence[FinalStudent],
               stats: Sequence[CriterionStats], agreement: Sequence[Agreement],
               out_dir: Path, human: ClassEval | None = None,
               handouts: HandoutMode = "reviewed") -> list[Path]:
    """report.html, students/ (teacher view) and handouts/ (student view, for the grades
    `FinalStudent.handout(handouts)` allows)."""
    env = environment()
    mark_output_folder(out_dir)
    report = out_dir / "report.html"
    report.write_text(render_report(env, store, run_id, rubric, students, stats, agreement,
                                    human), encoding="utf-8")
    folders = {True: out_dir / "students", False: out_dir / "handouts"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    template = env.get_template("student.html.j2")
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    written = [report]
    # Written one after another: rendering holds the GIL, and writer threads measured slower
    # (GIL hand-offs) than plain sequential writes for 20,000 small pages.
    for s in students:
        page = student_filename(s.student_id)
        ctx = _submission(store, s)
        handout = s.handout(handouts)
        for teacher, folder in folders.items():
            if not teacher and not handout:
                continue  # not reviewed yet, or may not leave (as in the exports)
            path = folder / page
            path.write_text(template.render(s=s, rubric=rubric, run_id=run_id, page=page,
                                            teacher=teacher, handout=handout,
                                            generated_at=generated_at, **ctx[teacher]),
                            encoding="utf-8")
            written.append(path)
    for folder in folders.values():
        _remove_stale_pages(folder, {p.name for p in written if p.parent == folder})
    return written
