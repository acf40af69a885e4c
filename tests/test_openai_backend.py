"""`--backend openai` against a real server: llama-cpp-python's OpenAI-compatible server on the
bundled SmolLM2 model, behind a proxy that counts every request by its body and injects faults
(grader/testing/_proxy.py). Through the CLI, as a teacher runs it; no mocks.

The model is tiny and slow on two cores: classes of 1-4 students, a one-criterion rubric and a
300-token answer cap keep the module near two minutes.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed "
                    "(the local extra)")

from grader.backends import AcceptsMedia, Paced, create, in_flight
from grader.backends.openai_compat import OpenAIBackend, server_schema
from grader.config.settings import Settings
from grader.errors import ConfigError
from grader.online.ledger import KILL_AFTER_REPLY_ENV
from grader.prompting.prompts import load_prompts
from grader.prompting.request import GradeRequest, Part, Turn
from grader.prompting.rubric import Rubric
from grader.prompting.schema import json_schema
from grader.testing._llama_server import LlamaServer
from grader.testing._proxy import FaultProxy

from _cli import grade, q

pytestmark = pytest.mark.local

RUBRIC_YAML = """\
title: Python loops quiz
question: Explain the difference between a for loop and a while loop in Python.
criteria:
  - {id: correctness, title: Correctness, max_points: 4}
"""
# llama-cpp-python's server knows response_format json_object with a schema, not json_schema
TOML = '[grader]\nresponse_format = "json_object"\n'
ANSWERS = {
    "ada": "A for loop goes over each item of a list or range. A while loop runs while its "
           "condition stays true.",
    "bob": "for loops are faster.",
    "cy": "While loops repeat until a condition becomes false; for loops iterate a sequence.",
    "dee": "A for loop is for counting and a while loop is for waiting.",
}
MODEL = "smollm2"


def make_class(root: Path, n: int, *, toml: str | None = TOML) -> Path:
    class_dir = root / "class"
    class_dir.mkdir(parents=True)
    (class_dir / "rubric.yaml").write_text(RUBRIC_YAML, encoding="utf-8")
    if toml is not None:
        (class_dir / "grader.toml").write_text(toml, encoding="utf-8")
    for sid in list(ANSWERS)[:n]:
        (class_dir / f"{sid}.txt").write_text(ANSWERS[sid], encoding="utf-8")
    return class_dir


def run_args(class_dir: Path, proxy: FaultProxy, db: Path, *extra: str) -> list[str]:
    return ["run", str(class_dir), "--backend", "openai", "--base-url", f"{proxy.url}/v1",
            "--model", MODEL, "--max-output-tokens", "300", "--db", str(db),
            "--out", str(db.parent / "out"), *extra]


def latest_outcomes(db: Path) -> dict[str, str]:
    return dict(q(db, "SELECT student_id, status FROM outcomes "
                      "WHERE run_id = (SELECT MAX(id) FROM runs)"))


def errors(out: str) -> int:
    """How many errors the command printed (one line each, then its fix)."""
    return sum(line.startswith("error:") for line in out.splitlines())


def answered_once(proxy: FaultProxy) -> bool:
    """No request body was answered twice (each answer is a model call paid for in time)."""
    answered = proxy.stats().answered
    return bool(answered) and max(answered.values()) == 1


@pytest.fixture(scope="module")
def graded(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Path, FaultProxy, str]]:
    """A class of three graded once through the server: (class folder, store, proxy, what
    `grade run` printed)."""
    root = tmp_path_factory.mktemp("openai")
    class_dir, db = make_class(root, 3), root / "g.sqlite"
    with FaultProxy(llama_server.url) as proxy:
        code, out = grade(*run_args(class_dir, proxy, db))
        assert code == 0, out
        yield class_dir, db, proxy, out


def test_a_class_is_graded_through_the_server(graded: tuple[Path, Path, FaultProxy, str]
                                              ) -> None:
    _, db, proxy, out = graded
    with (db.parent / "out" / "grades.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["student_id"] for r in rows) == ["ada", "bob", "cy"]
    assert set(latest_outcomes(db).values()) <= {"graded", "flagged"}
    assert q(db, "SELECT COUNT(DISTINCT student_id) FROM grades") == [(3,)]
    assert q(db, "SELECT backend, model FROM runs") == [("openai", MODEL)]
    # usage from the reply's `usage`, the served model recorded
    prompt, output, version = q(db, "SELECT MIN(prompt_tokens), MIN(output_tokens), "
                                    "MAX(model_version) FROM attempts")[0]
    assert prompt > 100 and output > 0 and version == MODEL
    # where the work goes, said once; redacted; never a $0.00
    assert out.count(f"sent to the model server at 127.0.0.1:{proxy.port}") == 1
    assert "names, e-mails and ids replaced" in out
    assert "cost: local, unpriced" in out and "$0.00" not in out
    assert "local, unpriced" in (db.parent / "out" / "report.html").read_text("utf-8")
    assert proxy.stats().chat >= 3 and answered_once(proxy)


def test_a_rerun_sends_no_request(graded: tuple[Path, Path, FaultProxy, str]) -> None:
    class_dir, db, proxy, _ = graded
    before = proxy.stats()
    code, out = grade(*run_args(class_dir, proxy, db))
    assert code == 0, out
    assert "(3 reused from the store)" in out
    assert proxy.stats().paths == before.paths
    code, out = grade("status", str(class_dir), "--db", str(db))
    assert code == 0 and "cost: local, unpriced" in out, out


def test_estimate_counts_with_the_servers_tokenizer_and_says_unpriced(
        graded: tuple[Path, Path, FaultProxy, str]) -> None:
    class_dir, _, proxy, _ = graded
    before = proxy.stats()
    code, out = grade("estimate", str(class_dir), "--backend", "openai", "--base-url",
                      f"{proxy.url}/v1", "--model", MODEL)
    assert code == 0, out
    assert "the server's tokenizer (/extras/tokenize)" in out
    online = next(line for line in out.splitlines() if line.startswith("online"))
    assert "prices: local, unpriced" in out and "unpriced" in online
    after = proxy.stats()
    assert after.chat == before.chat  # counted, not graded
    assert after.paths["/extras/tokenize"] > before.paths["/extras/tokenize"]


def test_eval_works_with_a_run_of_this_backend(graded: tuple[Path, Path, FaultProxy, str],
                                               tmp_path: Path) -> None:
    class_dir, db, _, _ = graded
    human = tmp_path / "human.csv"
    with human.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Student ID", "Criterion", "Score", "Rater"])
        for sid, score in (("ada", 4), ("bob", 1), ("cy", 3)):
            w.writerow([sid, "correctness", score, "ann"])
    code, out = grade("human", "import", str(human), str(class_dir), "--db", str(db))
    assert code == 0 and "imported 3 scores for 3 students by ann" in out, out
    table = tmp_path / "eval.csv"
    code, out = grade("eval", str(class_dir), "--db", str(db), "--csv", str(table))
    assert code == 0, out
    with table.open(newline="", encoding="utf-8") as fh:
        rows = {(r["grader"], r["criterion"]): r for r in csv.DictReader(fh)}
    assert rows["AI", "correctness"]["n"] == "3"


# A price set for the server's model in grader.toml (USD per 1M tokens; large, so that a class
# of one costs whole cents).
IN_PRICE, CACHED_PRICE, OUT_PRICE = 100.0, 10.0, 400.0
PRICED = TOML + (f'[grader.models."{MODEL}"]\nprices = [{{from = 2026-01-01, input = {IN_PRICE}, '
                 f'output = {OUT_PRICE}, cached_input = {CACHED_PRICE}, source = "test"}}]\n')


@pytest.fixture(scope="module")
def priced(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Path, FaultProxy, str]]:
    """A class of one with a price for the server's model, graded once with a budget."""
    root = tmp_path_factory.mktemp("priced")
    class_dir, db = make_class(root, 1, toml=PRICED), root / "g.sqlite"
    with FaultProxy(llama_server.url) as proxy:
        code, out = grade(*run_args(class_dir, proxy, db, "--budget", "5"))
        assert code == 0, out
        yield class_dir, db, proxy, out


def test_a_priced_run_stores_each_calls_cost_and_shows_dollars(
        priced: tuple[Path, Path, FaultProxy, str]) -> None:
    class_dir, db, _, out = priced
    rows = q(db, "SELECT prompt_tokens, cached_tokens, output_tokens, cost_usd FROM attempts "
                 "WHERE answered_at IS NOT NULL")
    assert rows and all(r[0] > 100 and r[2] > 0 for r in rows)
    for prompt, cached, output, cost in rows:  # each call: its usage at the price set
        assert cost == pytest.approx(
            ((prompt - cached) * IN_PRICE + cached * CACHED_PRICE + output * OUT_PRICE) / 1e6)
    total = sum(r[3] for r in rows)
    assert f"cost: ${total:.4f} (the price set in grader.toml); budget $5" in out, out
    assert "costs are counted at the price set in grader.toml ($100 input, $400 output" in out
    assert "unpriced" not in out
    code, status = grade("status", str(class_dir), "--db", str(db))
    assert code == 0 and f"cost: ${total:.4f} (the price set for {MODEL} in grader.toml)" \
        in status, status
    assert f"${total:.4f}" in (db.parent / "out" / "report.html").read_text("utf-8")
    wb = openpyxl.load_workbook(db.parent / "out" / "review.xlsx")
    run_sheet = {r[0]: r[1] for r in wb["Run"].iter_rows(values_only=True)}
    assert run_sheet["Cost (USD)"] == pytest.approx(total, abs=1e-6)
    assert run_sheet["Prices"].startswith(f"the price set for {MODEL} in grader.toml")


def test_estimate_prices_a_priced_server_in_dollars(priced: tuple[Path, Path, FaultProxy, str]
                                                    ) -> None:
    class_dir, _, proxy, _ = priced
    code, out = grade("estimate", str(class_dir), "--backend", "openai", "--base-url",
                      f"{proxy.url}/v1", "--model", MODEL)
    assert code == 0, out
    assert (f"prices: {MODEL} on the school's own model server at 127.0.0.1:{proxy.port}: $100 "
            "input, $400 output per 1M tokens, set in grader.toml (test)") in out
    tokens = int(re.search(r"^input: ([\d,]+) tokens", out, re.M)[1].replace(",", ""))
    answer = int(re.search(r"^output: ~([\d,]+) answer tokens", out, re.M)[1].replace(",", ""))
    online = next(line for line in out.splitlines() if line.startswith("online"))
    usd = float(re.search(r"\$(\d+\.\d{4})", online)[1])
    assert usd == pytest.approx((tokens * IN_PRICE + answer * OUT_PRICE) / 1e6, abs=1e-4)
    assert "budget: `grade run --budget" in out and "unpriced" not in out


def test_kill_9_mid_run_then_rerun_answers_no_request_twice(server_proxy: FaultProxy,
                                                            tmp_path: Path) -> None:
    """`grade run` is SIGKILLed right after it stored its second answer (the ledger's test
    hook: a real kill -9, at a point a test can rely on); the rerun asks only for the rest."""
    class_dir, db = make_class(tmp_path, 4), tmp_path / "g.sqlite"
    cmd = [sys.executable, "-m", "grader.cli", *run_args(class_dir, server_proxy, db,
                                                         "--concurrency", "1")]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                            env={**_env(), KILL_AFTER_REPLY_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    server_proxy.wait_until(lambda s: sum(s.answered.values()) >= 2, timeout=10)
    assert sum(server_proxy.stats().answered.values()) == 2
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(latest_outcomes(db)) == set(ANSWERS)
    assert set(latest_outcomes(db).values()) <= {"graded", "flagged"}
    assert answered_once(server_proxy)


def test_a_server_stopped_mid_run_fails_the_rest_with_one_message_then_a_rerun_finishes(
        server_proxy: FaultProxy, tmp_path: Path) -> None:
    class_dir, db = make_class(tmp_path, 4), tmp_path / "g.sqlite"
    # after the first answer every connection is dropped: the server went away. A class this
    # small would give up student by student before the 10 s an outage must last to stop the
    # run, hence the many retries.
    server_proxy.inject("refuse", times=10**6, after=1)
    code, out = grade(*run_args(class_dir, server_proxy, db, "--concurrency", "1",
                                "--max-retries", "30"))
    assert code == 2, out
    assert errors(out) == 1 and "cannot reach the model server at" in out
    assert "connection attempts in a row failed" in out and "start the server again" in out
    assert q(db, "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'") == [(1,)]
    # the one answer before the outage is kept (a re-ask for it may have been cut off)
    assert q(db, "SELECT COUNT(*) FROM attempts WHERE state IN ('answered', 'stored')") \
        == [(1,)]
    server_proxy.clear()  # the server is back
    code, out = grade(*run_args(class_dir, server_proxy, db))
    assert code == 0, out
    assert set(latest_outcomes(db)) == set(ANSWERS)
    assert set(latest_outcomes(db).values()) <= {"graded", "flagged"}
    assert answered_once(server_proxy)


def test_a_503_is_retried_after_retry_after(server_proxy: FaultProxy, tmp_path: Path) -> None:
    class_dir, db = make_class(tmp_path, 1), tmp_path / "g.sqlite"
    server_proxy.inject("503", retry_after=1)
    code, out = grade(*run_args(class_dir, server_proxy, db))
    assert code == 0, out
    assert "(1 retries)" in out
    stats = server_proxy.stats()
    assert stats.faults["503"] == 1 and max(stats.requests.values()) == 2
    assert answered_once(server_proxy)


def test_a_reply_that_is_not_json_is_retried_not_a_crash(server_proxy: FaultProxy,
                                                         tmp_path: Path) -> None:
    class_dir, db = make_class(tmp_path, 1), tmp_path / "g.sqlite"
    server_proxy.inject("not_json")
    code, out = grade(*run_args(class_dir, server_proxy, db))
    assert code == 0, out
    assert "(1 retries)" in out and "unexpected" not in out
    assert server_proxy.stats().faults["not_json"] == 1
    assert set(latest_outcomes(db).values()) <= {"graded", "flagged"}


def test_a_503_is_told_to_the_quota(server_proxy: FaultProxy) -> None:
    """The server full: the quota holds new requests for Retry-After and halves its limit."""
    backend = create("openai", settings=Settings(base_url=f"{server_proxy.url}/v1", model=MODEL,
                                                 response_format="json_object"))
    assert isinstance(backend, OpenAIBackend)
    server_proxy.inject("503", retry_after=0.5)

    async def go() -> int:
        try:
            return (await backend.generate(request(max_output_tokens=200))).retries
        finally:
            await backend.aclose()

    assert asyncio.run(go()) == 1
    assert backend.quota.stats.refused == 1 and backend.quota.stats.cuts == 1


def test_a_server_without_json_schema_is_told_apart_at_once(server_proxy: FaultProxy,
                                                            tmp_path: Path) -> None:
    """llama-cpp-python's server refuses response_format json_schema (with a 500): the run
    stops at the first reply with the setting that fixes it, without retrying."""
    class_dir, db = make_class(tmp_path, 2, toml=None), tmp_path / "g.sqlite"
    code, out = grade(*run_args(class_dir, server_proxy, db, "--concurrency", "1"))
    assert code == 2, out
    assert errors(out) == 1 and "refused response_format json_schema" in out
    assert 'set response_format = "json_object" in grader.toml' in out
    assert server_proxy.stats().chat == 1


def test_no_base_url_is_refused_before_any_call(tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 1)
    code, out = grade("run", str(class_dir), "--backend", "openai", "--model", MODEL,
                      "--db", str(tmp_path / "g.sqlite"))
    assert code == 2 and "needs the address of the model server" in out
    assert "fix: pass --base-url" in out
    assert not (tmp_path / "g.sqlite").exists()
    code, out = grade("run", str(class_dir), "--backend", "openai", "--base-url",
                      "http://127.0.0.1:9/v1", "--db", str(tmp_path / "g.sqlite"))
    assert code == 2 and "fix: pass --model NAME" in out


# --- the backend on its own: what it sends -----------------------------------------------------

def request(*, media: tuple[Part, ...] = (), history: tuple[Turn, ...] = (),
            max_output_tokens: int = 300) -> GradeRequest:
    rubric = Rubric.model_validate({"title": "t", "question": "q", "criteria": [
        {"id": "correctness", "title": "Correctness", "max_points": 4}]})
    prompts = load_prompts()
    return GradeRequest(
        key="k", model=MODEL, system=prompts.system(), static_prefix=prompts.static_prefix(rubric),
        student_parts=prompts.student_parts(ANSWERS["ada"], media, ("a.txt",)), history=history,
        response_schema=json_schema(rubric), max_output_tokens=max_output_tokens)


def test_messages_are_the_rendered_prompts_with_images_only_for_a_vision_model() -> None:
    png = Part(mime_type="image/png", data=b"\x89PNG\r\n\x1a\n")
    req = request(media=(png,), history=(Turn(role="model", text="{}"),
                                         Turn(role="user", text="again")))
    text_only = OpenAIBackend(Settings(base_url="http://127.0.0.1:9/v1", model=MODEL))
    messages, unsent = text_only.messages(req)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == req.system
    assert messages[1]["content"].startswith(req.static_prefix) and unsent == 1
    assert "[image omitted (image/png)" in messages[1]["content"]
    assert not isinstance(text_only, AcceptsMedia)
    vision = create("openai", settings=Settings(base_url="http://127.0.0.1:9/v1", model=MODEL,
                                                model_reads_images=True))
    assert isinstance(vision, AcceptsMedia) and "image/png" in vision.media_types
    messages, unsent = vision.messages(req)  # type: ignore[attr-defined]
    parts = messages[1]["content"]
    assert unsent == 0 and parts[0] == {"type": "text", "text": req.static_prefix}
    assert {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}} \
        in parts


def test_the_in_flight_ceiling_is_the_servers_slots() -> None:
    b = OpenAIBackend(Settings(base_url="http://127.0.0.1:9/v1", model=MODEL))
    assert isinstance(b, Paced) and in_flight(b, None) == 4
    b = OpenAIBackend(Settings(base_url="http://127.0.0.1:9/v1", model=MODEL, server_slots=2))
    assert in_flight(b, None) == 2 and in_flight(b, 7) == 7
    with pytest.raises(ConfigError, match="not an http"):
        OpenAIBackend(Settings(base_url="127.0.0.1:8080/v1", model=MODEL))


def test_the_schema_sent_is_closed_and_ordered() -> None:
    schema = server_schema(request().response_schema)
    crit = schema["properties"]["criteria"]["properties"]["correctness"]
    assert schema["additionalProperties"] is False and crit["additionalProperties"] is False
    assert list(crit["properties"]) == ["justification", "evidence", "score", "feedback"]
    assert "propertyOrdering" not in str(schema)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != KILL_AFTER_REPLY_ENV}

