"""HTML reports: hostile text renders inert, pages are self-contained and printable, the
agreement section appears after a review, and headless Chromium renders with no console errors."""

from __future__ import annotations

import html
import re
import struct
import subprocess
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader.escape import unescape_text
from grader.reports import write_reports
from grader.reports.html import student_filename
from grader.review.importing import import_workbook
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_class
from _synthetic import HTML_EVIL, SyntheticRun, build, require_tool

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRun:
    run = build(tmp_path / "db.sqlite", n=30, k=6)
    write_reports(run.store, run.run_id, tmp_path / "out")
    return run


def _pages(out: Path) -> list[Path]:
    return [out / "report.html", *sorted((out / "students").glob("*.html"))]


def test_hostile_text_is_escaped_everywhere(synth: SyntheticRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    escaped_seen = 0
    for page in _pages(out):
        html = page.read_text(encoding="utf-8")
        for evil in HTML_EVIL:
            assert evil not in html, page.name
        assert not re.search(r"<\s*script", html, re.I), page.name
        assert not re.search(r"<img\b", html, re.I), page.name
        assert not re.search(r"\son\w+\s*=", html.replace("onerror=alert", "")), page.name
        escaped_seen += html.count("&lt;script&gt;alert(1)&lt;/script&gt;")
        escaped_seen += html.count("&lt;img src=x onerror=alert(1)&gt;")
    assert escaped_seen > 10  # the hostile text is shown, as text
    evil_page = (out / "students" / student_filename(synth.evil_ids[0])).read_text()
    assert "&lt;" in evil_page


def test_pages_are_self_contained_and_printable(synth: SyntheticRun, tmp_path: Path) -> None:
    for page in _pages(tmp_path / "out")[:5]:
        html = page.read_text(encoding="utf-8")
        assert "Content-Security-Policy" in html and "default-src 'none'" in html
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), page.name
        assert "<link" not in html and "@media print" in html
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count("<svg") >= 1 + 6 + 1  # totals, one per criterion, review progress
    for section in ("Distribution of final totals", "Item analysis", "Hardest criteria",
                    "Students needing attention", "Review progress", "Run cost and time"):
        assert section in report
    assert "Agreement between the model and the teacher" not in report  # nothing reviewed yet
    assert "Essay &lt;b&gt;1&lt;/b&gt;" in report  # the rubric title is data too


def test_student_filenames_are_safe_and_distinct() -> None:
    names = {student_filename(s) for s in ["s1", "../etc/passwd", "a b", "a_b", "=x", ".hidden"]}
    assert len(names) == 6
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert student_filename("s00001") == "s00001.html"


def test_reports_show_teacher_values_and_agreement(synth: SyntheticRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    changed = None
    for r in range(2, ws.max_row + 1):
        sid = unescape_text(str(ws.cell(r, 1).value))
        if sid in synth.flagged_ids:
            continue
        ws.cell(r, cols["Approved"]).value = "yes"
        if changed is None:
            ai = ws.cell(r, cols["AI: c2"]).value
            ws.cell(r, cols["Teacher: c2"]).value = 0 if ai else 10
            changed = (sid, ai)
    wb.save(tmp_path / "edited.xlsx")
    import_workbook(synth.store, tmp_path / "edited.xlsx")
    write_reports(synth.store, synth.run_id, out)

    report = (out / "report.html").read_text()
    assert "Agreement between the model and the teacher" in report
    table = report.split("Agreement between the model and the teacher")[1].split("</table>")[0]
    assert "Criterion 2" in table and "QWK" in table
    reviewed = len(synth.student_ids) - len(synth.flagged_ids)
    c2_row = table.split("Criterion 2")[1].split("</tr>")[0]
    cells = re.findall(r'<td class="num">([^<]*)</td>', c2_row)
    assert cells[0] == str(reviewed)
    assert cells[1] == f"{100 * (reviewed - 1) / reviewed:.0f}%"  # all kept but one
    assert sid_page_shows_teacher(out, *changed)


def sid_page_shows_teacher(out: Path, sid: str, ai: float) -> bool:
    page = (out / "students" / student_filename(sid)).read_text()
    row = page.split("Criterion 2")[1].split("</tr>")[0]
    return "teacher; model" in row and f"model {ai:g}" in row and 'class="changed"' in page


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    chromium = require_tool("chromium", "chromium")
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", *args], capture_output=True, text=True, timeout=180, check=False)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_chromium_screenshot_without_console_errors(synth: SyntheticRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    evil_page = out / "students" / student_filename(synth.evil_ids[0])
    for page in (out / "report.html", evil_page):
        png = tmp_path / (page.stem + ".png")
        proc = _chromium([f"--screenshot={png}", "--window-size=1280,1600", page.as_uri()],
                         tmp_path / "profile")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert _png_size(png) == (1280, 1600) and png.stat().st_size > 20_000
        # every console message (errors, CSP violations from injected script) is logged
        console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
        assert console == [], console
    dom = _chromium(["--dump-dom", evil_page.as_uri()], tmp_path / "profile").stdout
    assert "</html>" in dom
    assert not re.search(r"<script|<img", dom, re.I)
    assert "&lt;script&gt;" in dom or "&lt;img" in dom


def test_cli_report_regenerates_without_a_model(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.cli import cli

    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    class_dir = tmp_path / "essay1"
    class_dir.mkdir()
    build(class_dir / ".grader" / "grader.sqlite", n=12, class_dir=str(class_dir.resolve()))
    out = tmp_path / "reports"
    res = CliRunner().invoke(cli, ["report", str(class_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("review.xlsx", "report.html", "grades.csv"):
        assert (out / name).exists(), name
    assert len(list((out / "students").glob("*.html"))) == 12


# -- the submission on the student page ----------------------------------------------------------

def test_evidence_is_located_verbatim_or_across_reflowed_white_space() -> None:
    from grader.reports.evidence import from_parts, locate

    text = "def fib(n):\n    a, b = 0, 1\n    return a\n# O(n) time"
    segments, quotes = locate(text, [("c1", "a, b = 0, 1"), ("c2", "def fib(n):  a, b"),
                                     ("c2", "not in there"), ("c3", "O(n)")])
    assert [q.found for q in quotes] == [True, True, False, True]
    assert "".join(s.text for s in segments) == text  # nothing lost or added
    marked = {s.text: s.marks for s in segments if s.marks}
    assert marked["a, b"] == (1, 2)  # overlapping quotes: both numbers on the shared stretch
    assert marked["O(n)"] == (4,)
    sub = from_parts([{"text": "Preamble\n<submission>\nthe answer\n</submission>\nGrade it."},
                      {"mime_type": "image/png", "bytes": 2048, "sha256": "x"}])
    assert sub.text == "the answer" and sub.media == ["image/png, 2 KB"]
    assert from_parts([{"text": "custom template, no fence"}]).text == \
        "custom template, no fence"
    assert from_parts(None).text is None


def test_student_pages_show_the_submission_in_teacher_and_student_views(
        fake_gemini: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Teacher view: the text with each quote marked, flags, model vs teacher values, internal
    ids. Student view: the same text and final feedback, none of those. A student who was never
    sent shows why; one whose reply was shared with an identical submission shows its text."""
    from grader.cli import cli

    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    same = "Binary encoding <b>is</b> efficient. The clocks are perfect, so no self-clocking."
    cls = make_class(tmp_path, 2, extra={"copy1.txt": same, "copy2.txt": same,
                                         "blank.txt": ""})
    out = tmp_path / "out"
    # nobody reviewed these grades: --handouts all writes their handouts (stamped)
    res = CliRunner().invoke(cli, ["run", str(cls), "--out", str(out), "--handouts", "all"])
    assert res.exit_code == 0, res.output
    assert "handouts" in res.output

    teacher = (out / "students" / "s0000.html").read_text(encoding="utf-8")
    student = (out / "handouts" / "s0000.html").read_text(encoding="utf-8")
    text = (cls / "s0000.txt").read_text(encoding="utf-8")
    for page in (teacher, student):
        body = page.split('<div class="submission">')[1].split("</div>")[0]
        plain = re.sub(r"<sup>[\d,]+</sup>|<mark[^>]*>|</mark>", "", body)
        assert html.unescape(plain) == text  # the whole text, as it was graded
        assert body.count("<mark") >= 1  # the fake model quotes the submission verbatim
    assert "Teacher view" in teacher and "run 1" in teacher and "submission #" in teacher
    assert "model" in teacher and "Justification (model)" in teacher
    for internal in ("Teacher view", "run 1", "submission #", "grade #", "Justification",
                     "model", "Flags", "s0000 ·", "class report"):
        assert internal not in student, internal
    assert "@media print" in student

    blank = (out / "students" / "blank.html").read_text(encoding="utf-8")
    assert "never sent to the model (empty)" in blank
    assert "no student view yet" in blank  # a grade that may not leave gets no handout
    assert not (out / "handouts" / "blank.html").exists()
    copies = [(out / "students" / f"copy{i}.html").read_text(encoding="utf-8") for i in (1, 2)]
    assert all("Binary encoding &lt;b&gt;is&lt;/b&gt;" in p for p in copies)  # escaped, shown
    assert sum("taken from a byte-identical submission" in p for p in copies) == 1


def test_flagged_students_private_note_stays_on_the_teacher_page(synth: SyntheticRun,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    wb = openpyxl.load_workbook(out / "review.xlsx")
    ws = wb["Summary"]
    cols = {c.value: c.column for c in ws[1]}
    flagged = next(f for f in synth.flagged_ids if f not in synth.ungraded_ids)
    r = next(i for i in range(2, ws.max_row + 1)
             if unescape_text(str(ws.cell(i, 1).value)) == flagged)
    assert not (out / "handouts" / student_filename(flagged)).exists()  # not reviewed yet
    ws.cell(r, cols["Approved"]).value = "yes"
    ws.cell(r, cols["Private note (never shown to the student)"]).value = "talk to parents"
    ws.cell(r, cols["Feedback to the student"]).value = "Please see me after class."
    wb.save(out / "edited.xlsx")
    import_workbook(synth.store, out / "edited.xlsx")
    write_reports(synth.store, synth.run_id, out)
    name = student_filename(flagged)
    teacher = (out / "students" / name).read_text(encoding="utf-8")
    student = (out / "handouts" / name).read_text(encoding="utf-8")
    assert "talk to parents" in teacher and "talk to parents" not in student
    assert "Please see me after class." in teacher and "Please see me after class." in student
    assert "<h2>Flags</h2>" in teacher and "<h2>Flags</h2>" not in student
