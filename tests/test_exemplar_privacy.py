"""Graded examples never reach a student's pages, and never share a placeholder with the student
being graded: a class graded with examples from a reviewed class whose files carry planted
personal data, through the CLI against the fake server (`--exemplar-db`), and a class graded
with examples from its own reviewed students (`--exemplars-same-run`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from grader.testing.fake_gemini import FakeGemini

from _classgen import ANSWERS, RUBRIC
from _cli import grade, review

# class A: each file carries its author's name, e-mail, phone, home address and id
PEOPLE = [("ann", "Annika Quorrel", "annika.quorrel@example.org", "+1 415 555 0101", "4410231"),
          ("ben", "Benedikt Ostrava", "b.ostrava@example.org", "+1 415 555 0102", "4410232"),
          ("cat", "Catalina Wexby", "cwexby@example.org", "+1 415 555 0103", "4410233"),
          ("dan", "Danilo Farrant", "dfarrant@example.org", "+1 415 555 0104", "4410234")]
ADDRESS = "13 Elm Street, Springfield"
PLACEHOLDER = re.compile(r"\[(?:EXAMPLE_\d+_)?[A-Z]+(?:_\d+)?\]")


def a_file(sid: str, name: str, email: str, phone: str, number: str, answer: str) -> str:
    return (f"# by {name} ({email}, phone {phone}), student number {number}\n"
            f"Home: {ADDRESS}\n\n{work(sid)}: {answer}\n")


def work(sid: str) -> str:
    """A mark of `sid`'s own text (not the id itself: ids are redacted, names restored)."""
    return f"WORK-NO-{[p[0] for p in PEOPLE].index(sid) + 1}"


def comment_on(sid: str) -> str:
    return f"COMMENT-ON-{sid}: a careful answer."


def personal(sid: str) -> list[str]:
    """Everything of `sid`'s that must not be on another student's page."""
    _, name, email, phone, number = next(p for p in PEOPLE if p[0] == sid)
    first, last = name.split()
    return [first, last, email, email.split("@")[0], phone, phone.replace(" ", ""), number,
            work(sid), comment_on(sid)]


def class_a(root: Path) -> Path:
    folder = root / "A"
    folder.mkdir(parents=True)
    (folder / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    (folder / "roster.csv").write_text(
        "id,name,email\n" + "".join(f"{s},{n},{e}\n" for s, n, e, _, _ in PEOPLE),
        encoding="utf-8")
    for (sid, name, email, phone, number), answer in zip(PEOPLE, ANSWERS, strict=False):
        (folder / f"{sid}.txt").write_text(a_file(sid, name, email, phone, number, answer),
                                           encoding="utf-8")
    return folder


def graded_and_approved(folder: Path, out: Path, db: Path) -> None:
    code, output = grade("run", str(folder), "--db", str(db), "--out", str(out))
    assert code == 0, output
    review(out, db, approve={sid: comment_on(sid) for sid, *_ in PEOPLE})


def pages(out: Path, sid: str) -> dict[str, str]:
    found = {f"{kind}/{sid}.html": (out / kind / f"{sid}.html").read_text(encoding="utf-8")
             for kind in ("students", "handouts") if (out / kind / f"{sid}.html").is_file()}
    assert f"handouts/{sid}.html" in found and f"students/{sid}.html" in found, sorted(found)
    return found


def student_parts(call: dict[str, Any]) -> tuple[str, str]:
    """(the graded-examples part, the submission part) of one generateContent body."""
    texts = [p.get("text", "") for c in call["body"]["contents"] for p in c["parts"]]
    (examples,) = [t for t in texts if "<example_submission" in t]
    (submission,) = [t for t in texts if "<submission>" in t]
    return examples, submission


def assert_placeholders_are_per_person(calls: list[dict[str, Any]]) -> int:
    """Within each request, the graded student's placeholders are plain ([STUDENT_1], ...) and
    every example's are in that example's own namespace; returns how many example blocks
    carried any."""
    scoped = 0
    for call in calls:
        examples, submission = student_parts(call)
        assert not re.search(r"\[EXAMPLE_", submission)
        blocks = re.findall(r'<example_submission n="(\d+)">\n(.*?)</example_submission>\n'
                            r'(.*?)(?=<example_submission|\Z)', examples, re.DOTALL)
        assert blocks
        for n, text, scored in blocks:
            tags = set(PLACEHOLDER.findall(text + scored))
            assert all(t.startswith(f"[EXAMPLE_{n}_") for t in tags), (n, tags)
            scoped += bool(tags)
    return scoped


@pytest.fixture
def reviewed_a(tmp_path: Path, gemini_env: FakeGemini) -> tuple[Path, Path, Path]:
    """Class A graded (names redacted, as by default), every grade approved with a comment."""
    folder, out, db = class_a(tmp_path), tmp_path / "A_out", tmp_path / "A.sqlite"
    graded_and_approved(folder, out, db)
    return folder, out, db


def test_examples_from_another_class_leave_no_trace_on_the_students_pages(
        tmp_path: Path, gemini_env: FakeGemini, reviewed_a: tuple[Path, Path, Path]) -> None:
    _, _, a_db = reviewed_a
    b = tmp_path / "B"
    b.mkdir()
    (b / "rubric.yaml").write_text(RUBRIC, encoding="utf-8")
    (b / "roster.csv").write_text("id,name,email\numa,Uma Thurman,uma@example.org\n"
                                  "vic,Vic Vance,vic@example.org\n", encoding="utf-8")
    token = {"uma": "OWN-WORK-1", "vic": "OWN-WORK-2"}  # (ids are redacted: not "uma")
    own = {"uma": f"{token['uma']} {ANSWERS[0]} Uma Thurman wrote this.",
           "vic": f"{token['vic']} {ANSWERS[1]}"}
    for sid, text in own.items():
        (b / f"{sid}.txt").write_text(text, encoding="utf-8")
    gemini_env.reset_stats()
    out = tmp_path / "B_out"
    code, output = grade("run", str(b), "--db", str(tmp_path / "B.sqlite"), "--out", str(out),
                         "--exemplars", "3", "--exemplar-db", str(a_db),
                         "--exemplar-similarity", "tfidf", "--handouts", "all")  # unreviewed
    assert code == 0, output

    calls = [r for r in gemini_env.requests() if r["endpoint"] == "generateContent"]
    assert len(calls) == 2
    assert assert_placeholders_are_per_person(calls) == 6  # 3 examples each, all redacted
    for call in calls:
        examples, _ = student_parts(call)
        for sid, *_ in PEOPLE:  # sent redacted: names, e-mails, phones, student numbers
            for secret in personal(sid)[:7]:
                assert secret not in examples, secret
        assert "[EXAMPLE_1_AUTHOR]" in examples and "[STUDENT_1]" not in examples
    (uma_call,) = [c for c in calls if token["uma"] in student_parts(c)[1]]
    assert "[STUDENT_1] wrote this" in student_parts(uma_call)[1]

    for sid in own:
        for page, html in pages(out, sid).items():
            assert token[sid] in html, page  # the student's own work is on their page
            for other, *_ in PEOPLE:
                for secret in personal(other):
                    assert secret not in html, (page, secret)
            assert ADDRESS not in html and "# by" not in html and "EXAMPLE_" not in html, page
            assert "COMMENT-ON" not in html, page
    assert "Uma Thurman wrote this" in pages(out, "uma")["handouts/uma.html"]
    teacher = pages(out, "uma")["students/uma.html"]
    assert "Graded examples the model was shown" in teacher and "submission:" in teacher
    assert "Graded examples" not in pages(out, "uma")["handouts/uma.html"]


def test_examples_from_the_same_run_stay_off_each_others_pages(
        tmp_path: Path, gemini_env: FakeGemini, reviewed_a: tuple[Path, Path, Path]) -> None:
    folder, out, db = reviewed_a
    gemini_env.reset_stats()
    code, output = grade("run", str(folder), "--db", str(db), "--out", str(out),
                         "--exemplars", "2", "--exemplars-same-run",
                         "--exemplar-similarity", "tfidf")
    assert code == 0, output
    calls = [r for r in gemini_env.requests() if r["endpoint"] == "generateContent"]
    assert len(calls) == len(PEOPLE)  # graded again, each beside two classmates
    assert assert_placeholders_are_per_person(calls) == 2 * len(PEOPLE)
    for call in calls:
        examples, _ = student_parts(call)
        for sid, *_ in PEOPLE:
            for secret in personal(sid)[:7]:
                assert secret not in examples, secret
    # approved again, so every handout is written from the new grades
    review(out, db, approve={sid: comment_on(sid) for sid, *_ in PEOPLE})
    for sid, *_ in PEOPLE:
        for page, html in pages(out, sid).items():
            assert work(sid) in html, page
            for other, *_ in PEOPLE:
                if other != sid:
                    for secret in personal(other):
                        assert secret not in html, (page, secret)
            assert "EXAMPLE_" not in html, page
