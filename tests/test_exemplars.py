"""Graded examples from the teacher's decisions (`grade run --exemplars K`): chosen
deterministically by similarity, never the student's own work nor a classmate of the same run
(unless allowed), redacted like student text, carried in the student's part of the request,
recorded per grade, and graded again when the bank changes."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from grader.backends.base import SupportsEmbeddings
from grader.backends.gemini import GeminiBackend, VertexBackend
from grader.backends.local import LocalBackend
from grader.cli import cli
from grader.errors import ConfigError
from grader.grading.embeddings import similarity_of
from grader.grading.exemplars import Example, Selector, rubric_examples
from grader.grading.records import GradeVersion
from grader.grading.selection import Grade, Reuse, Selection, choose
from grader.prompting.prompts import submitted_text
from grader.prompting.rubric import Rubric
from grader.testing.fake_gemini import FakeGemini

from _classgen import make_big_class, make_class
from _cli import review


def invoke(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _ex(key: str, text: str, sid: str | None = None, body: str | None = None) -> Example:
    return Example(key=key, source="approved", text=text, scores={"choice": 2.0},
                   student_id=sid, body_hash=body)


# --- the selector: pure --------------------------------------------------------------------

BANK = [
    _ex("submission:1", "Binary encoding is bandwidth efficient, clocks are perfect.", "a", "h1"),
    _ex("submission:2", "Manchester encoding because it is self-clocking.", "b", "h2"),
    _ex("submission:3", "Differential Manchester is robust against polarity errors.", "c", "h3"),
    _ex("rubric:1", "Binary encoding, since clocks are perfect."),
]


def test_most_similar_first_and_deterministic() -> None:
    sel = Selector(BANK, 2)
    picked = sel.choose("Differential Manchester: polarity errors", "z", "hz")
    assert [c.example.key for c in picked] == ["submission:3", "submission:2"]
    assert picked[0].similarity > picked[1].similarity > 0
    again = Selector(list(BANK), 2).choose("Differential Manchester: polarity errors", "z",
                                           "hz")
    assert again == picked


def test_ties_go_by_key() -> None:
    sel = Selector(BANK, 4)
    picked = sel.choose("zzz qqq", "z", "hz")  # nothing in common: every similarity is 0
    assert [c.example.key for c in picked] == sorted(e.key for e in BANK)


def test_never_the_students_own_work() -> None:
    sel = Selector(BANK, 4)
    mine = sel.choose("Manchester encoding because it is self-clocking.", "b", "hb")
    assert "submission:2" not in [c.example.key for c in mine]  # the same student
    identical = sel.choose("anything", "q", "h3")  # a byte-identical submission
    assert "submission:3" not in [c.example.key for c in identical]
    same_text = sel.choose("Binary encoding, since clocks are perfect.", "q", "hq")
    assert "rubric:1" not in [c.example.key for c in same_text]


def test_students_of_the_run_are_left_out_unless_allowed() -> None:
    sel = Selector(BANK, 4, run_students=frozenset({"a", "c"}))
    assert [e.key for e in sel.examples] == ["submission:2", "rubric:1"]


def test_rubric_examples_join_the_bank() -> None:
    rubric = Rubric.model_validate({
        "title": "t", "criteria": [{"id": "choice", "title": "c", "max_points": 2}],
        "exemplars": [{"submission": " Binary. ", "scores": {"choice": 2}, "comment": "ok"}]})
    assert rubric_examples(rubric) == [Example(key="rubric:1", source="rubric", text="Binary.",
                                               scores={"choice": 2.0}, comment="ok")]


def test_the_submission_is_cut_from_the_rendered_part_never_the_examples() -> None:
    parts = [{"text": "intro\n<submission>\nmy answer\n</submission>\ngrade it"}]
    assert submitted_text(parts) == "my answer"
    examples = {"text": "Graded examples follow\n<example_submission n=\"1\">\nAnn's work\n"
                        "</example_submission>"}
    media = {"mime_type": "image/png", "bytes": 10, "sha256": "x"}
    assert submitted_text([examples, *parts, media]) == "my answer"
    # a custom template without the markers: the whole submission part, still not the examples
    assert submitted_text([examples, {"text": "my answer as it is"}]) == "my answer as it is"
    assert submitted_text([media]) is None


def _version(exemplars: str | None) -> GradeVersion:
    return GradeVersion(1, 1, "graded", 3.0, 0, "cfg", [], 1, exemplars)


def test_other_examples_grade_again_same_examples_reuse() -> None:
    sel = Selection()
    kw: dict[str, Any] = {"in_epoch": None, "run_epoch": 0, "config_hash": "cfg"}
    assert isinstance(choose(sel, "s", latest=_version("a"), exemplars="a", **kw), Reuse)
    assert choose(sel, "s", latest=_version("a"), exemplars="b", **kw) == Grade(0)
    assert choose(sel, "s", latest=_version(None), exemplars="b", **kw) == Grade(0)
    assert choose(sel, "s", latest=_version("a"), exemplars=None, **kw) == Grade(0)
    assert isinstance(choose(sel, "s", latest=_version(None), **kw), Reuse)


# --- end to end -----------------------------------------------------------------------------

def _generate(fake: FakeGemini) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["endpoint"] == "generateContent"]


def _student_texts(body: dict[str, Any]) -> list[str]:
    return [p.get("text", "") for c in body["contents"] for p in c["parts"]]


LAST_YEAR_PII = "I am Alice Zephyr (alice.zephyr@example.org). "


# One graded example in the rubric (its comment, "One reason only.", marks it in requests).
RUBRIC_EXAMPLE = ("exemplars:\n  - submission: Binary encoding, one bit per baud.\n"
                  "    scores: {choice: 2, reasons: 1.5}\n    comment: One reason only.\n")


def with_rubric_example(class_dir: Path) -> Path:
    rubric = class_dir / "rubric.yaml"
    rubric.write_text(rubric.read_text(encoding="utf-8") + RUBRIC_EXAMPLE, encoding="utf-8")
    return class_dir


@pytest.fixture
def last_year(tmp_path: Path, gemini_env: FakeGemini) -> Path:
    """Last year's class, graded without redaction and reviewed: s0000 approved, s0003
    corrected. Returns its store."""
    class_dir = make_class(tmp_path / "last", 5)
    (class_dir / "roster.csv").write_text(
        "id,name,email\ns0000,Alice Zephyr,alice.zephyr@example.org\ns0001,Bo Li,\n"
        "s0002,Cy Do,\ns0003,Di Ng,\ns0004,Ed Oh,\n", encoding="utf-8")
    first = class_dir / "s0000.txt"
    first.write_text(LAST_YEAR_PII + first.read_text(encoding="utf-8"), encoding="utf-8")
    out, db = tmp_path / "last_out", tmp_path / "last.sqlite"
    invoke("run", str(class_dir), "--out", str(out), "--db", str(db), "--no-redact")
    review(out, db, approve={"s0000": "Well argued."},
            scores={"s0003": {"choice": 0, "reasons": 1}})
    return db


def test_run_shows_redacted_examples_records_them_and_regrades_on_a_new_bank(
        tmp_path: Path, fake_gemini: FakeGemini, last_year: Path) -> None:
    class_dir = make_class(tmp_path / "now", 4)
    for f in class_dir.glob("s*.txt"):
        f.write_text(f.read_text(encoding="utf-8").replace("answer.", "answer, this year:"),
                     encoding="utf-8")
    # t9999 handed in exactly what last year's s0003 did: never shown that example
    last_s3 = (tmp_path / "last" / "class" / "s0003.txt").read_text(encoding="utf-8")
    (class_dir / "t9999.txt").write_text(last_s3, encoding="utf-8")
    db, out = tmp_path / "now.sqlite", tmp_path / "now_out"
    cmd = ("run", str(class_dir), "--out", str(out), "--db", str(db), "--exemplars", "2",
           "--exemplar-db", str(last_year))
    fake_gemini.reset_stats()
    invoke(*cmd)

    calls = _generate(fake_gemini)
    assert len(calls) == 5
    shown: dict[str, str] = {}
    for call in calls:
        texts = _student_texts(call["body"])
        blocks = [t for t in texts if "<example_submission" in t]
        assert len(blocks) <= 1
        sub = next(t for t in texts if "<submission>" in t)
        student = sub.split("<submission>\n", 1)[1].split("\n", 1)[0]
        shown[student] = blocks[0] if blocks else ""
        body = json.dumps(call["body"])
        assert "Alice" not in body and "Zephyr" not in body and "alice.zephyr" not in body
        if blocks:  # the examples come before the submission, after the marking scheme
            assert texts.index(blocks[0]) < texts.index(sub)
    # last year's approved s0000 (with its PII redacted) and corrected s0003
    approved = [s for s in shown.values() if "Teacher's comment: Well argued." in s]
    # its author and e-mail as placeholders of the example, never the graded student's
    assert approved and all(re.search(r"\[EXAMPLE_\d_AUTHOR\] \(\[EXAMPLE_\d_EMAIL_1\]\)", s)
                            and "[STUDENT_" not in s for s in approved)
    corrected = [s for s in shown.values() if "choice=0, reasons=1" in s]
    assert corrected
    twin = shown[last_s3.split("\n", 1)[0]]
    assert "choice=0, reasons=1" not in twin  # its byte-identical twin is not shown to it

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT g.student_id, e.position, e.exemplar, e.source, e.similarity"
            " FROM grade_exemplars e JOIN grades g ON g.id = e.grade_id"
            " ORDER BY g.student_id, e.position").fetchall()
        hashes = dict(conn.execute("SELECT student_id, exemplars_hash FROM grades"))
    seen: dict[str, list[tuple[str, str]]] = {}
    for sid, _pos, key, source, _sim in rows:
        seen.setdefault(sid, []).append((key, source))
    with sqlite3.connect(last_year) as conn:
        sub_of = dict(conn.execute("SELECT student_id, id FROM submissions"))
    # the same student id (s0000, s0003) never sees their own old work either
    assert f"submission:{sub_of['s0000']}" not in [k for k, _ in seen.get("s0000", [])]
    corrected_key = (f"submission:{sub_of['s0003']}", "corrected")
    assert corrected_key not in seen["t9999"]
    assert corrected_key in seen["s0002"]
    assert all(hashes[s] for s in seen)

    # rerun: the same examples, so nothing is asked again
    fake_gemini.reset_stats()
    invoke(*cmd)
    assert _generate(fake_gemini) == []

    # the teacher approves one more of last year's students: whoever now gets it is graded
    # again; the others keep their grade
    last_out = tmp_path / "last_out"
    review(last_out, last_year, approve={"s0001": "Good."}, scores={})
    fake_gemini.reset_stats()
    invoke(*cmd)
    regraded = _generate(fake_gemini)
    assert 0 < len(regraded) < 5
    with sqlite3.connect(db) as conn:
        newest = conn.execute(
            "SELECT e.exemplar FROM grade_exemplars e JOIN grades g ON g.id = e.grade_id"
            " WHERE g.run_id = (SELECT MAX(id) FROM runs)").fetchall()
        reused = conn.execute("SELECT COUNT(*) FROM outcomes WHERE run_id = (SELECT MAX(id)"
                              " FROM runs) AND reused = 1").fetchone()[0]
    assert (f"submission:{sub_of['s0001']}",) in newest
    assert reused == 5 - len(regraded)


def test_students_of_the_same_run_only_when_allowed(tmp_path: Path,
                                                    gemini_env: FakeGemini) -> None:
    fake_gemini = gemini_env
    class_dir = with_rubric_example(make_class(tmp_path, 3))
    out, db = tmp_path / "out", tmp_path / "g.sqlite"
    invoke("run", str(class_dir), "--out", str(out), "--db", str(db))
    first = _generate(fake_gemini)
    assert all("One reason only." in _student_texts(c["body"])[0] for c in first)  # prefix
    review(out, db, approve={"s0000": "Exactly right."}, scores={})

    fake_gemini.reset_stats()
    run = ("run", str(class_dir), "--out", str(out), "--db", str(db), "--exemplars", "3")
    invoke(*run)  # the bank's reviewed grade is a student of this run: only the rubric's
    calls = _generate(fake_gemini)
    assert len(calls) == 3
    for c in calls:
        texts = _student_texts(c["body"])
        assert "One reason only." not in texts[0]  # moved out of the marking scheme ...
        examples = next(t for t in texts if "<example_submission" in t)
        assert "One reason only." in examples  # ... into the student's part
        assert "Exactly right." not in examples

    fake_gemini.reset_stats()
    invoke(*run, "--exemplars-same-run")
    with sqlite3.connect(db) as conn:
        seen = conn.execute(
            "SELECT g.student_id, e.student_id FROM grade_exemplars e"
            " JOIN grades g ON g.id = e.grade_id WHERE g.run_id = (SELECT MAX(id) FROM runs)"
            " AND e.source = 'approved'").fetchall()
    assert {s for s, _ in seen} == {"s0001", "s0002"}  # never s0000 itself
    assert {e for _, e in seen} == {"s0000"}


def test_with_a_cache_the_examples_travel_with_the_student(
        tmp_path: Path, gemini_env: FakeGemini) -> None:
    """The marking scheme stays in the explicit cache (its rubric examples moved out of it),
    and each request carries its student's examples in front of the submission."""
    fake_gemini = gemini_env
    class_dir = with_rubric_example(make_big_class(tmp_path, 3))
    invoke("run", str(class_dir), "--db", str(tmp_path / "g.sqlite"), "--out",
           str(tmp_path / "o"), "--cache", "on", "--exemplars", "1")
    (create,) = [r for r in fake_gemini.requests() if r["endpoint"] == "cachedContents.create"]
    assert "One reason only." not in json.dumps(create["body"])
    sent = _generate(fake_gemini)
    assert len(sent) == 3
    for r in sent:
        assert r["body"]["cachedContent"]
        texts = _student_texts(r["body"])
        assert texts[0].startswith("Graded examples follow") and "One reason only." in texts[0]
        assert texts[1].startswith("The student's submission follows")


def test_only_unknown_authors_join_the_redactor() -> None:
    """An example's author who is a student of this class is left to the class's entry (so a
    student's own name stays [STUDENT_1]); one from another class is added."""
    from grader.grading.exemplars import authors
    from grader.intake.discover import Submission

    bank = [Example(key="submission:1", source="approved", text="a", scores={}, student_id="x",
                    name="Alice Zephyr", email="az@example.org"),
            Example(key="submission:2", source="approved", text="b", scores={}, student_id="y",
                    name="Bo Li", email=None)]
    subs = [Submission(student_id="s1", name="Bo Li")]
    added = authors(Selector(bank, 1), subs)
    assert [(a.student_id, a.name) for a in added] == [("example:submission:1",
                                                        "Alice Zephyr")]


def test_dry_run_shows_the_examples(tmp_path: Path, gemini_env: FakeGemini) -> None:
    class_dir = with_rubric_example(make_class(tmp_path, 2))
    out = invoke("run", str(class_dir), "--db", str(tmp_path / "g.sqlite"), "--dry-run",
                 "--exemplars", "1")
    assert "Graded examples follow" in out and "One reason only." in out
    assert _generate(gemini_env) == []


def test_batch_jobs_carry_the_examples_and_record_them(
        tmp_path: Path, fake_gemini: FakeGemini, last_year: Path) -> None:
    """`grade batch submit --exemplars K` shows the same examples as an online run would, and
    the grades collected from the job record them."""
    class_dir = make_class(tmp_path / "now", 3)
    db, out = tmp_path / "batch.sqlite", tmp_path / "batch_out"
    fake_gemini.configure(batch_pending_s=0, batch_running_s=0)
    submitted = invoke("batch", "submit", str(class_dir), "--db", str(db), "--out", str(out),
                       "--batch-mode", "file", "--exemplars", "2", "--exemplar-db",
                       str(last_year))
    assert "examples compared by embeddings" in submitted  # auto, with a key
    assert "Zephyr" not in json.dumps(_embedded(fake_gemini)) and _embedded(fake_gemini)
    (f,) = [f for f in fake_gemini.files() if f["source"] == "UPLOADED"]
    lines = [json.loads(x) for x in fake_gemini.file_bytes(f["name"]).splitlines()]
    assert len(lines) == 3
    for line in lines:
        texts = [p.get("text", "") for c in line["request"]["contents"] for p in c["parts"]]
        assert any("<example_submission" in t for t in texts)
        assert "Zephyr" not in json.dumps(line)  # last year's author is redacted here too
    fake_gemini.advance(seconds=5)
    invoke("batch", "collect", str(class_dir), "--db", str(db), "--out", str(out))
    with sqlite3.connect(db) as conn:
        per_grade = conn.execute(
            "SELECT g.student_id, g.exemplars_hash, COUNT(e.position) FROM grades g"
            " JOIN grade_exemplars e ON e.grade_id = g.id GROUP BY g.id").fetchall()
    # the bank holds two of last year's grades; s0000 is never shown its own old work
    assert sorted((sid, n) for sid, _, n in per_grade) == [("s0000", 1), ("s0001", 2),
                                                           ("s0002", 2)]
    assert all(h for _, h, _ in per_grade)


# --- similarity by Gemini embeddings ---------------------------------------------------------

def _embedded(fake: FakeGemini) -> list[list[str]]:
    """The texts of each embedding call, in order."""
    return [[r["content"]["parts"][0]["text"] for r in call["body"]["requests"]]
            for call in fake.requests() if call["endpoint"] == "batchEmbedContents"]


def test_auto_is_embeddings_where_the_backend_can_embed() -> None:
    assert issubclass(GeminiBackend, SupportsEmbeddings)
    assert issubclass(VertexBackend, SupportsEmbeddings)
    assert not issubclass(LocalBackend, SupportsEmbeddings)
    assert similarity_of("auto", object(), "local") == "tfidf"
    assert similarity_of("tfidf", object(), "local") == "tfidf"
    with pytest.raises(ConfigError, match="cannot"):
        similarity_of("embeddings", object(), "local")


def test_with_a_key_examples_are_compared_by_redacted_embeddings(
        tmp_path: Path, fake_gemini: FakeGemini, last_year: Path) -> None:
    """auto with a key: the bank is embedded in one batched call, each student's work as it is
    sent (redacted); no name leaves in an embedding call; the chosen examples and their
    embedding similarity are recorded; a rerun reuses every grade."""
    from grader.testing._fake_embed import vector

    class_dir = make_class(tmp_path / "now", 4)
    (class_dir / "roster.csv").write_text(
        "id,name,email\ns0000,Fay Quill,\ns0001,Gus Umber,gus.umber@example.org\n"
        "s0002,Hal Vex,\ns0003,Ivy Wren,\n", encoding="utf-8")
    s1 = class_dir / "s0001.txt"
    s1.write_text("I am Gus Umber (gus.umber@example.org). " + s1.read_text(encoding="utf-8"),
                  encoding="utf-8")
    db, out = tmp_path / "now.sqlite", tmp_path / "now_out"
    cmd = ("run", str(class_dir), "--out", str(out), "--db", str(db), "--exemplars", "1",
           "--exemplar-db", str(last_year))
    fake_gemini.reset_stats()
    output = invoke(*cmd)

    calls = _embedded(fake_gemini)
    assert len(calls[0]) == 2  # last year's two reviewed grades, in one call
    # then one call per student whose text is not embedded yet (this year's s0003 handed in
    # last year's s0003 text: embedded once, and never shown to itself)
    texts = [t for c in calls for t in c]
    assert all(len(c) == 1 for c in calls[1:]) and len(calls) == 4
    assert len(texts) == len(set(texts))
    everything = json.dumps(calls)
    for secret in ("Alice", "Zephyr", "alice.zephyr", "Gus", "Umber", "gus.umber"):
        assert secret not in everything
    assert any("[STUDENT_1]" in t and "[EMAIL_1]" in t for c in calls[1:] for t in c)
    assert "examples compared by embeddings (gemini-embedding-001): 5 redacted text(s) in " \
        "4 call(s)" in output
    m = re.search(r"about ([\d,]+) tokens, \$([\d.]+), included above", output)
    assert m is not None and int(m[1].replace(",", "")) > 0
    tokens = int(m[1].replace(",", ""))  # estimated (the fake reports none): priced by the table
    assert float(m[2]) == pytest.approx(tokens * 0.15 / 1e6, abs=5e-5)

    bank = [vector(t, 768) for t in calls[0]]
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT g.student_id, e.similarity FROM grade_exemplars e"
            " JOIN grades g ON g.id = e.grade_id ORDER BY g.student_id").fetchall()
    assert len(rows) == 4
    expected = {round(sum(a * b for a, b in zip(v, vector(t, 768), strict=True)), 4)
                for v in bank for t in texts}
    assert all(round(sim, 4) in expected for _, sim in rows)

    fake_gemini.reset_stats()
    invoke(*cmd)
    assert _generate(fake_gemini) == []  # the same examples: every grade reused


def test_tfidf_makes_no_embedding_call(tmp_path: Path, fake_gemini: FakeGemini,
                                       last_year: Path) -> None:
    class_dir = make_class(tmp_path / "now", 3)
    db, out = tmp_path / "now.sqlite", tmp_path / "now_out"
    fake_gemini.reset_stats()
    output = invoke("run", str(class_dir), "--out", str(out), "--db", str(db), "--exemplars",
                    "2", "--exemplar-db", str(last_year), "--exemplar-similarity", "tfidf")
    assert _embedded(fake_gemini) == []
    assert "embeddings" not in output
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM grade_exemplars").fetchone()[0] == 5


def test_a_failed_embedding_call_fails_one_student_not_the_run(
        tmp_path: Path, fake_gemini: FakeGemini, last_year: Path) -> None:
    class_dir = make_class(tmp_path / "now", 3)
    db, out = tmp_path / "now.sqlite", tmp_path / "now_out"
    cmd = ["run", str(class_dir), "--out", str(out), "--db", str(db), "--exemplars", "1",
           "--exemplar-db", str(last_year), "--concurrency", "1"]
    fake_gemini.inject_for("batchEmbedContents", "400")
    res = CliRunner().invoke(cli, cmd, catch_exceptions=False)
    assert res.exit_code != 0
    with sqlite3.connect(db) as conn:
        status = dict(conn.execute("SELECT status, COUNT(*) FROM outcomes GROUP BY status"))
    assert status == {"failed": 1, "graded": 2}
    invoke(*cmd)  # the rerun grades the student that failed
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT status, reused FROM outcomes WHERE run_id ="
                            " (SELECT MAX(id) FROM runs) ORDER BY student_id").fetchall()
    assert sorted(last) == [("graded", 0), ("graded", 1), ("graded", 1)]


def test_embeddings_on_a_backend_that_cannot_embed_fail_before_grading_starts(
        tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 2)
    res = CliRunner().invoke(cli, ["run", str(class_dir), "--backend", "local", "--exemplars",
                                   "1", "--exemplar-similarity", "embeddings",
                                   "--db", str(tmp_path / "g.sqlite")])
    assert res.exit_code != 0
    assert "exemplar_similarity = embeddings needs a backend that can embed" in res.output
    assert "grading 2 students" not in res.output  # no progress line for a run that never ran
