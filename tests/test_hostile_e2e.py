"""`grade run` on a hostile class against the fake Gemini server: every student ends graded or
flagged with a reason, nothing outside the class folder is read, and no secret reaches a
request, the store or an output."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.intake.limits import MB
from grader.testing.fake_gemini import FakeGemini

from _classgen import RUBRIC
from _cli import q
from _make_fixtures import make_docx, make_notebook, make_png, write

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "intro-python"
KEY = "test-key-not-secret-8e1f"
ANSWER = "Binary encoding: one bit per baud is bandwidth efficient and perfect clocks need no " \
         "self-clocking."


@pytest.fixture
def gemini_env(fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    for var in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini.url)
    return fake_gemini


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def grades(out: Path) -> dict[str, dict[str, str]]:
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        return {r["student_id"]: r for r in csv.DictReader(fh)}


def billed(fake: FakeGemini) -> int:
    return sum(fake.stats()["billed_by_submission"].values())


def bodies(fake: FakeGemini) -> str:
    return json.dumps([r["body"] for r in fake.requests()], ensure_ascii=False)


def _bomb_pdf() -> bytes:
    stream = zlib.compress(b"0 0 m\n" * (80 * MB // 6), 9)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /Font << /F1 << /Type"
            b" /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream
            + b"\nendstream"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for num, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return bytes(out + b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref)


def _docx_with(part: str, data: bytes, base: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data if info.filename == part else src.read(info))
    return out.getvalue()


@pytest.fixture
def hostile_class(tmp_path: Path) -> Iterator[Path]:
    cls = tmp_path / "class"
    write(cls / "rubric.yaml", RUBRIC)
    write(cls / "roster.csv", "id,name\nalice,Alice A\njos\u00e9,Jos\u00e9 P\u00e9rez\n"
          "=cmd,Formula Fan\n")
    write(cls / "alice.txt", ANSWER)
    write(cls / "jose\u0301.py", "# " + ANSWER)  # NFD, as macOS writes it
    write(cls / "=cmd.txt", ANSWER)
    write(cls / " spaced .txt", ANSWER)
    write(cls / "esc\x1b]0;pwned\x07.txt", ANSWER)
    write(cls / "a b.txt", ANSWER)
    write(cls / "a_b.txt", ANSWER)
    (cls / "eve.txt").symlink_to("/etc/passwd")
    (cls / "gina.txt").symlink_to("/proc/self/environ")
    (cls / "loop").symlink_to("..")
    write(cls / "hal" / "answer.txt", ANSWER)
    (cls / "hal" / "shadow.txt").symlink_to("/etc/passwd")
    os.mkfifo(cls / "pipe.txt")
    nb = json.loads(make_notebook([("code", "# " + ANSWER, [])]))
    nb["metadata"] = {"kernelspec": "python3", "language_info": "python"}
    write(cls / "nbmeta.ipynb", json.dumps(nb))
    write(cls / "nbsurrogate.ipynb", make_notebook([("markdown", "x \ud800 " + ANSWER, [])]))
    write(cls / "bomb.pdf", _bomb_pdf())
    write(cls / "emil.pdf", (SAMPLES / "emil.pdf").read_bytes()[:900])
    base = make_docx([ANSWER], image=make_png())
    with zipfile.ZipFile(io.BytesIO(base)) as z:
        media = next(n for n in z.namelist() if n.startswith("word/media/"))
        xml = z.read("word/document.xml")
    para = b"<w:p><w:r><w:t>" + b"a" * 200 + b"</w:t></w:r></w:p>"
    write(cls / "bombdoc.docx", _docx_with(
        "word/document.xml", xml.replace(b"<w:body>", b"<w:body>" + para * (40 * MB // 220)),
        base))
    write(cls / "bigimage.docx", _docx_with(media, make_png() + bytes(30 * MB), base))
    chain = [cls / "deep"]
    chain[0].mkdir()
    for _ in range(1000):
        chain.append(chain[-1] / "d")
        chain[-1].mkdir()
    (chain[-1] / "answer.txt").write_text(ANSWER)
    yield cls
    (chain[-1] / "answer.txt").unlink()
    for folder in reversed(chain):  # rmtree would recurse too deep
        folder.rmdir()


EXPECTED = {
    "alice": ("graded", None), "jos\u00e9": ("graded", None), "spaced": ("graded", None),
    "a b": ("graded", None), "a_b": ("graded", None), "hal": ("graded", None),
    "nbmeta": ("graded", None), "nbsurrogate": ("graded", None),
    "eve": ("flagged", "symlink"), "gina": ("flagged", "symlink"), "loop": ("flagged", "symlink"),
    "pipe": ("flagged", "special_file"), "bomb": ("flagged", "corrupt"),
    "emil": ("flagged", "corrupt"), "bombdoc": ("flagged", "oversized"),
    "bigimage": ("flagged", "oversized"), "deep": ("flagged", "too_deep"),
}


def test_hostile_class_is_graded_or_flagged_and_leaks_nothing(
        gemini_env: FakeGemini, hostile_class: Path, tmp_path: Path) -> None:
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    code, output = run_cli("run", str(hostile_class), "--db", str(db), "--out", str(out))
    assert code == 0, output
    assert "Traceback" not in output and "\x1b" not in output
    table = grades(out)
    for sid, (status, reason) in EXPECTED.items():
        assert table[sid]["status"] == status, (sid, table[sid])
        if reason:
            assert table[sid]["flags"].startswith(f"{reason}: "), (sid, table[sid]["flags"])
    crafted = [sid for sid in table if sid not in EXPECTED]
    assert len(crafted) == 2 and all(table[s]["status"] == "graded" for s in crafted)
    for sid, row in table.items():
        assert row["status"] in ("graded", "flagged")
        assert row["status"] == "graded" or row["flags"], sid
        assert sid.isprintable() and sid == sid.strip()
        assert not sid.startswith(("=", "+", "-", "@", "'"))
    assert table["jos\u00e9"]["name"] == "Jos\u00e9 P\u00e9rez"
    assert "/etc/passwd" in table["eve"]["flags"]
    assert "/proc/self/environ" in table["gina"]["flags"]
    # a page per student, two crafted ids never share one
    assert len(list((out / "students").glob("*.html"))) == len(table)
    # nothing from outside the class folder, and no secret, anywhere
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    sent = bodies(gemini_env)
    # ten students graded; identical answers are one request, paid once
    assert sum(1 for r in table.values() if r["status"] == "graded") == 10
    assert sent.count("<submission>\\n") == billed(gemini_env) == len(
        gemini_env.stats()["billed_by_request"])
    leaks = [KEY, passwd, "GEMINI_API_KEY"]
    for where, text in [("requests", sent), ("store", db.read_bytes().decode("latin-1"))] + [
            (str(p), p.read_bytes().decode("latin-1")) for p in out.rglob("*") if p.is_file()]:
        for secret in leaks:
            assert secret not in text, (secret, where)
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT student_id, status FROM outcomes"))
    assert set(statuses) == set(table)


def test_reports_inside_the_class_folder_are_never_graded(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = tmp_path / "hw"
    write(cls / "rubric.yaml", RUBRIC)
    write(cls / "alice.txt", ANSWER)
    write(cls / "bob.txt", "Manchester encoding.")
    monkeypatch.chdir(cls)
    for _ in range(2):  # `cd class && grade run .`, twice
        code, output = run_cli("run", ".", "--db", str(tmp_path / "g.sqlite"))
        assert code == 0, output
    assert (cls / "reports" / "hw" / ".grader-output").is_file()
    assert set(grades(cls / "reports" / "hw")) == {"alice", "bob"}
    assert billed(gemini_env) == 2


@pytest.mark.parametrize("template", ["system.j2", "submission.j2"])
def test_hostile_prompt_override_stops_before_any_call(
        gemini_env: FakeGemini, tmp_path: Path, template: str) -> None:
    cls = tmp_path / "class"
    write(cls / "rubric.yaml", RUBRIC)
    write(cls / "alice.txt", ANSWER)
    write(tmp_path / "prompts" / template,
          "{{ lipsum.__globals__['os'].environ['GEMINI_API_KEY'] }}"
          "{{ cycler.__init__.__globals__.os.popen('touch pwned').read() }}")
    code, output = run_cli("run", str(cls), "--prompts", str(tmp_path / "prompts"),
                           "--db", str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "out"))
    assert code == 2 and template in output and "Traceback" not in output
    assert KEY not in output and not Path("pwned").exists()
    assert billed(gemini_env) == 0


@pytest.mark.parametrize(("edit", "message"), [
    (("max_points: 3", "max_points: .inf"), "criteria.1.max_points: Input should be a finite"),
    (("max_points: 3", "max_points: 1e308"), "criteria.1.max_points: Input should be less"),
    (("title: Reasons", "title: Reasons\n    title: Again"), "key 'title' appears twice"),
    (("{A: 80, B: 60, C: 40, F: 0}", "{A: .nan, F: 0}"), "grade_bands.A"),
])
def test_hostile_rubric_is_a_clean_error(gemini_env: FakeGemini, tmp_path: Path,
                                         edit: tuple[str, str], message: str) -> None:
    cls = tmp_path / "class"
    write(cls / "rubric.yaml", RUBRIC.replace(*edit))
    write(cls / "alice.txt", ANSWER)
    code, output = run_cli("run", str(cls), "--db", str(tmp_path / "g.sqlite"),
                           "--out", str(tmp_path / "out"))
    assert code == 2 and message in output and "Traceback" not in output
    assert billed(gemini_env) == 0


SECRET = "SECRET-ANSWER-KEY-do-not-send-5d0c"


def test_hard_link_to_a_file_outside_the_class_is_flagged_never_read(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    # A .tar unpacked without filters can make a student's file another name of any file on the
    # same disk; os.link makes one the same way.
    key = write(tmp_path / "teacher" / "answer-key.txt", f"{SECRET}\n{ANSWER}\n")
    cls = tmp_path / "class"
    write(cls / "rubric.yaml", RUBRIC)
    write(cls / "alice.txt", ANSWER)
    os.link(key, cls / "eve.txt")
    write(cls / "hal" / "answer.txt", ANSWER)
    os.link(key, cls / "hal" / "key.txt")
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    code, output = run_cli("run", str(cls), "--db", str(db), "--out", str(out))
    assert code == 0, output
    table = grades(out)
    assert table["eve"]["status"] == "flagged", table["eve"]
    assert table["eve"]["flags"].startswith("hard_link: "), table["eve"]["flags"]
    assert "eve.txt" in table["eve"]["flags"]
    assert "copy the file instead of linking it" in table["eve"]["flags"]
    assert table["alice"]["status"] == table["hal"]["status"] == "graded"
    notes = q(db, "SELECT notes_json FROM submissions WHERE student_id = 'hal'")
    assert any("skipped key.txt: hard_link" in n for (n,) in notes), notes
    sent = bodies(gemini_env)
    assert sent.count("<submission>\\n") >= 1
    for where, text in [("requests", sent), ("store", db.read_bytes().decode("latin-1"))] + [
            (str(p), p.read_bytes().decode("latin-1")) for p in out.rglob("*") if p.is_file()]:
        assert SECRET not in text, where


def test_a_foreign_grader_output_file_does_not_hide_a_student(
        gemini_env: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = tmp_path / "hw"
    write(cls / "rubric.yaml", RUBRIC)
    write(cls / "bob" / ".grader-output", "")  # only the name of grader's marker
    write(cls / "bob" / "answer.txt", ANSWER)
    monkeypatch.chdir(cls)
    for _ in range(2):  # the second run finds grader's own reports in the class folder
        code, output = run_cli("run", ".", "--db", str(tmp_path / "g.sqlite"))
        assert code == 0, output
    table = grades(cls / "reports" / "hw")
    assert list(table) == ["bob"] and table["bob"]["status"] == "graded"
    assert billed(gemini_env) == 1
    notes = q(tmp_path / "g.sqlite", "SELECT notes_json FROM submissions WHERE student_id='bob'")
    assert any(".grader-output is not the marker grader writes" in n for (n,) in notes), notes
