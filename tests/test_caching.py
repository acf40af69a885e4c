"""Explicit context caching of the marking scheme, end to end through the CLI (and real killed
processes) against the fake Gemini server: one cache per run, named by every request, deleted at
the end and after Ctrl-C/SIGTERM, reused or deleted after a SIGKILL, recreated when it expires,
given up (with one notice) when it cannot be created, and never made below the minimum."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.oauth2.credentials import Credentials

from grader.backends.gemini import VertexBackend
from grader.cli import cli
from grader.config.models import Pricing, packaged, today
from grader.config.settings import DEFAULT_GEMINI_MODEL, resolve
from grader.online.ledger import KILL_AFTER_REPLY_ENV
from grader.online.pipeline import run_class
from grader.prompting.request import Usage
from grader.testing.fake_gemini import FakeGemini

from _classgen import big_rubric, make_big_class, make_class
from _cli import generated, grade, run_big
from _procs import env_for, grade_cmd, scalar


def q(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql, args)]


def calls(fake: FakeGemini, endpoint: str) -> list[dict]:
    return [r for r in fake.requests() if r["endpoint"] == endpoint]


@pytest.mark.today  # compares the run's costs with the table's prices
def test_a_scheme_above_the_minimum_is_cached_once_named_by_every_request_and_deleted(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    code, output, db = run_big(tmp_path, 8, "--concurrency", "4")
    assert code == 0, output
    stats = gemini_env.stats()
    assert stats["caches"] == {"created": 1, "deleted": 1, "expired": 0, "patched": 0}
    assert gemini_env.caches() == []  # nothing left on the service
    (create,) = calls(gemini_env, "cachedContents.create")
    name = q(db, "SELECT name FROM caches")[0][0]
    assert create["body"]["systemInstruction"]["parts"][0]["text"].startswith("You are a careful")
    assert "Note 1: Award the reasons point" in create["body"]["contents"][0]["parts"][0]["text"]
    sent = generated(gemini_env)
    assert len(sent) == 8
    for r in sent:
        body = r["body"]
        assert body["cachedContent"] == name
        assert not {"systemInstruction", "tools", "toolConfig"} & set(body)
        first = body["contents"][0]["parts"][0]["text"]
        assert first.startswith("The student's submission follows")  # no marking scheme
    # the store: one cache, deleted, with its creation and storage priced
    (row,) = q(db, "SELECT state, tokens, create_usd, storage_usd, usd_per_hour FROM caches")
    state, tokens, create_usd, storage_usd, per_hour = row
    assert state == "deleted" and tokens > 4096 and create_usd > 0 and storage_usd >= 0
    price = packaged().get(DEFAULT_GEMINI_MODEL).price_on(today())
    assert create_usd == pytest.approx(tokens * price.input / 1e6)
    assert per_hour == pytest.approx(tokens * price.cache_storage_hour / 1e6)
    # every attempt recorded its cached tokens and is priced at the cached-input rate
    pricing = Pricing.of(packaged(), DEFAULT_GEMINI_MODEL)
    for p_tok, c_tok, o_tok, t_tok, cost in q(
            db, "SELECT prompt_tokens, cached_tokens, output_tokens, thinking_tokens, cost_usd"
                " FROM attempts"):
        assert c_tok == tokens and p_tok > c_tok
        assert cost == pytest.approx(pricing.cost(Usage(
            prompt_tokens=p_tok, cached_tokens=c_tok, output_tokens=o_tok,
            thinking_tokens=t_tok), today()))
    # the run's cost is what the fake billed: calls at the cached rate, creation and storage
    run_cost = float(re.search(r"^cost: \$(\d+\.\d+)", output, re.MULTILINE).group(1))
    assert run_cost == pytest.approx(stats["spend_usd"], abs=1e-4)
    assert "cache: the marking scheme" in output and "1 created" in output
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'") == [(8,)]
    status = CliRunner().invoke(cli, ["status", str(tmp_path / "class"), "--db", str(db)])
    assert "of which the context cache $" in status.output
    assert "Context cache (creation and storage" in (tmp_path / "o" / "report.html").read_text()


def test_below_the_minimum_no_cache_and_the_prefix_is_first_and_identical(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = make_class(tmp_path, 4)
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g.sqlite"),
                         "--out", str(tmp_path / "o"))
    assert code == 0, output
    endpoints = gemini_env.stats()["by_endpoint"]
    assert endpoints == {"generateContent": 4}  # not even a countTokens: its bytes bound it
    firsts = {r["body"]["contents"][0]["parts"][0]["text"] for r in generated(gemini_env)}
    assert len(firsts) == 1 and next(iter(firsts)).startswith("# Marking scheme")
    assert all("systemInstruction" in r["body"] for r in generated(gemini_env))
    assert "cache: not used: the marking scheme is" in output and "below" in output
    # --cache on says why it cannot, before grading anyone
    code, output = grade("run", str(class_dir), "--db", str(tmp_path / "g2.sqlite"),
                         "--out", str(tmp_path / "o2"), "--cache", "on", "--regrade")
    assert code == 2 and "fix: use --cache auto" in output


def test_cache_off_sends_the_scheme_with_every_request(gemini_env: FakeGemini,
                                                       tmp_path: Path) -> None:
    code, output, _ = run_big(tmp_path, 3, "--cache", "off")
    assert code == 0, output
    assert gemini_env.stats()["by_endpoint"] == {"generateContent": 3}
    firsts = {r["body"]["contents"][0]["parts"][0]["text"] for r in generated(gemini_env)}
    assert len(firsts) == 1 and "Note 1:" in next(iter(firsts))


def test_an_expired_cache_is_recreated_and_no_student_is_lost(gemini_env: FakeGemini,
                                                              tmp_path: Path) -> None:
    gemini_env.inject("expire_cache")  # the first request finds its cache expired
    code, output, db = run_big(tmp_path, 8, "--concurrency", "4")
    assert code == 0, output
    assert gemini_env.stats()["caches"]["created"] == 2  # one recreation, whoever noticed
    assert q(db, "SELECT state FROM caches ORDER BY id") == [("expired",), ("deleted",)]
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'") == [(8,)]
    # the refused request was sent again under the same hash: nothing paid is unusable
    failed = q(db, "SELECT request_hash FROM attempts WHERE state = 'failed'")
    assert len(failed) >= 1
    for (h,) in failed:
        assert q(db, "SELECT COUNT(*) FROM responses WHERE request_hash = ?", (h,)) == [(1,)]
    names = [r["body"]["cachedContent"] for r in generated(gemini_env)]
    assert len(set(names)) == 2 and names[-1] == q(db, "SELECT name FROM caches")[-1][0]
    assert output.count("it is created again") == 1


def test_the_ttl_is_extended_when_the_run_outlives_it(gemini_env: FakeGemini, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    gemini_env.configure(latency_ms=150)
    monkeypatch.setenv("GRADER_CACHE_TTL_S", "2")  # a run of 12 x 150 ms outlives it
    code, output, db = run_big(tmp_path, 12, "--concurrency", "1")
    assert code == 0, output
    assert gemini_env.stats()["caches"]["patched"] >= 1
    assert "times extended" in output
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'") == [(12,)]


def test_a_cache_that_cannot_be_created_falls_back_and_says_so_once(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    gemini_env.inject_for("cachedContents.create", "403")
    code, output, db = run_big(tmp_path, 5)
    assert code == 0, output
    assert output.count("creating the context cache failed") == 1
    for r in generated(gemini_env):
        assert "cachedContent" not in r["body"] and "systemInstruction" in r["body"]
        assert "Note 1:" in r["body"]["contents"][0]["parts"][0]["text"]
    assert q(db, "SELECT state FROM caches") == [("failed",)]
    assert q(db, "SELECT COUNT(*) FROM outcomes WHERE status = 'graded'") == [(5,)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_delete_the_cache(tmp_path: Path, sig: signal.Signals) -> None:
    class_dir = make_big_class(tmp_path, 30)
    db = tmp_path / "g.sqlite"
    # 1 s a reply: the run needs ~15 s, so the signal lands mid-run even on a loaded machine
    with FakeGemini(latency_ms=1000) as fake:
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # then never raises KeyboardInterrupt: give the child the default, as a terminal would.
        proc = subprocess.Popen(grade_cmd(class_dir, db, "--concurrency", "2"),
                                env=env_for(fake), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        fake.wait_for_requests(3 + 2)  # at --concurrency 2: at least 3 students graded
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert fake.stats()["caches"]["created"] == 1
        assert fake.caches() == []  # deleted on the way out
    assert q(db, "SELECT state FROM caches") == [("deleted",)]
    assert scalar(db, "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'") == 1


def _killed_run(class_dir: Path, db: Path, fake: FakeGemini) -> str:
    killed = subprocess.run(grade_cmd(class_dir, db, "--concurrency", "1"), capture_output=True,
                            env=env_for(fake, **{KILL_AFTER_REPLY_ENV: "2"}), timeout=60)
    assert killed.returncode == -signal.SIGKILL
    (live,) = fake.caches()  # the killed run could not delete it
    assert q(db, "SELECT state, name FROM caches") == [("live", live["name"])]
    return str(live["name"])


def test_after_a_sigkill_the_next_run_reuses_the_matching_cache(tmp_path: Path) -> None:
    class_dir = make_big_class(tmp_path, 6)
    db = tmp_path / "g.sqlite"
    with FakeGemini() as fake:
        orphan = _killed_run(class_dir, db, fake)
        fake.reset_stats()
        done = subprocess.run(grade_cmd(class_dir, db), capture_output=True, text=True,
                              env=env_for(fake), timeout=60)
        assert done.returncode == 0, done.stderr
        assert "1 reused from a run that was killed" in done.stdout
        stats = fake.stats()
        assert stats["by_endpoint"].get("cachedContents.create") is None
        assert {r["body"]["cachedContent"] for r in generated(fake)} == {orphan}
        assert fake.caches() == []
    assert q(db, "SELECT state, run_id FROM caches") == [("deleted", 2)]
    assert scalar(db, "SELECT COUNT(DISTINCT student_id) FROM grades") == 6


@pytest.mark.parametrize("how", ["changed rubric", "expired", "cache off"])
def test_after_a_sigkill_a_stale_orphan_is_deleted(tmp_path: Path, how: str) -> None:
    class_dir = make_big_class(tmp_path, 6)
    db = tmp_path / "g.sqlite"
    with FakeGemini() as fake:
        orphan = _killed_run(class_dir, db, fake)
        if how == "changed rubric":
            (class_dir / "rubric.yaml").write_text(big_rubric(6100), encoding="utf-8")
        elif how == "expired":
            fake.advance(hours=2)  # past its TTL: the service dropped it
        fake.reset_stats()
        extra = ("--cache", "off") if how == "cache off" else ()
        done = subprocess.run(grade_cmd(class_dir, db, *extra), capture_output=True, text=True,
                              env=env_for(fake), timeout=60)
        assert done.returncode == 0, done.stderr
        stats = fake.stats()
        assert stats["by_endpoint"].get("cachedContents.create") == (
            None if how == "cache off" else 1)
        assert orphan not in {r["body"].get("cachedContent") for r in generated(fake)}
        deletes = [r["path"] for r in calls(fake, "cachedContents.delete")]
        assert any(p.endswith(orphan) for p in deletes) == (how != "expired")
        assert fake.caches() == []
    states = q(db, "SELECT state FROM caches ORDER BY id")
    first = "expired" if how == "expired" else "deleted"
    assert states == [(first,)] + ([] if how == "cache off" else [("deleted",)])


def test_vertex_caches_through_the_same_sdk_calls(fake_gemini: FakeGemini, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", fake_gemini.url)
    class_dir = make_big_class(tmp_path, 4)
    settings = resolve({"db": str(tmp_path / "g.db"), "backend": "enterprise",
                        "project": "proj", "location": "global"}, class_dir=class_dir)
    backend = VertexBackend(settings, credentials=Credentials(token="test"))
    summary = run_class(class_dir, settings, backend=backend)
    asyncio.run(backend.aclose())
    assert summary.graded == 4 and summary.cache is not None and summary.cache.used
    (create,) = calls(fake_gemini, "cachedContents.create")
    assert create["vertex"] and create["path"] == \
        "/v1beta1/projects/proj/locations/global/cachedContents"
    assert create["body"]["model"].endswith("publishers/google/models/" + DEFAULT_GEMINI_MODEL)
    for r in generated(fake_gemini):
        assert r["vertex"] and "systemInstruction" not in r["body"]
        assert r["body"]["cachedContent"].startswith("projects/proj/locations/global/"
                                                     "cachedContents/")
    assert fake_gemini.stats()["caches"]["deleted"] == 1


@pytest.mark.parametrize("day", [
    pytest.param("2026-12-15", marks=pytest.mark.today("2026-12-15")),
    pytest.param("2027-06-01", marks=pytest.mark.today("2027-06-01"))])
def test_the_cache_is_priced_on_the_model_tables_day_like_the_calls(
        gemini_env: FakeGemini, tmp_path: Path, day: str) -> None:
    # 3.8 Flash's price doubles on 2027-01-01: whatever the machine's date, one of the two
    # days differs from it, and the cache must be priced on the table's day (GRADER_TODAY), as
    # the calls are and as the fake bills it
    code, output, db = run_big(tmp_path, 4)
    assert code == 0, output
    ((tokens, create_usd, per_hour),) = q(db, "SELECT tokens, create_usd, usd_per_hour FROM caches")
    price = packaged().get(DEFAULT_GEMINI_MODEL).price_on(today())
    assert str(today()) == day
    assert create_usd == pytest.approx(tokens * price.input / 1e6)
    assert create_usd == pytest.approx(gemini_env.stats()["cache_usd"]["create"])
    assert per_hour == pytest.approx(tokens * price.cache_storage_hour / 1e6)
