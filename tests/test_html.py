"""HTML reports: hostile text renders inert, pages are self-contained and printable, the
agreement section appears after a review, and headless Chromium renders with no console errors."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader._escape import unescape_text
from grader.reports import write_reports
from grader.reports.html import student_filename
from grader.review import import_workbook

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
