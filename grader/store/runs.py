"""Runs: begun, finished, interrupted, found again to continue a regrade."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from grader.errors import StoreError
from grader.grading.records import Run, RunInfo
from grader.store.core import StoreCore, loads, mapped, now


class Runs(StoreCore):
    # --- runs --------------------------------------------------------------------------------

    @staticmethod
    def _run(r: sqlite3.Row) -> Run:
        return Run(
            id=r["id"], started_at=r["started_at"], finished_at=r["finished_at"],
            status=r["status"], class_dir=r["class_dir"], backend=r["backend"], model=r["model"],
            rubric_path=r["rubric_path"], rubric_hash=r["rubric_hash"],
            prompt_hash=r["prompt_hash"], schema_hash=r["schema_hash"],
            fingerprint=r["fingerprint"], config_hash=r["config_hash"], epoch=r["epoch"],
            mode=r["mode"], selection=loads(r["selection_json"], {}),
            sdk_version=r["sdk_version"], grader_version=r["grader_version"],
            settings=loads(r["settings_json"], {}), rubric=loads(r["rubric_json"], {}),
            pid=r["pid"],
        )

    @mapped
    def begin_run(self, info: RunInfo) -> Run:
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO runs (started_at, class_dir, backend, model, rubric_path,"
                " rubric_hash, prompt_hash, schema_hash, sdk_version, grader_version,"
                " settings_json, rubric_json, fingerprint, config_hash, mode, selection_json, pid)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (now(), info.class_dir, info.backend, info.model, info.rubric_path,
                 info.rubric_hash, info.prompt_hash, info.schema_hash, info.sdk_version,
                 info.grader_version, json.dumps(info.settings, default=str),
                 json.dumps(info.rubric), info.fingerprint, info.config_hash, info.mode,
                 json.dumps(info.selection, sort_keys=True), os.getpid()),
            )
            run_id = int(cur.lastrowid or 0)
            epoch = info.epoch if info.epoch is not None else (
                run_id if info.mode != "normal" else 0)
            self.conn.execute("UPDATE runs SET epoch=? WHERE id=?", (epoch, run_id))
        return self.run(run_id)

    @mapped
    def finish_run(self, run_id: int, status: str) -> None:
        self.conn.execute("UPDATE runs SET finished_at=?, status=? WHERE id=?",
                          (now(), status, run_id))

    @mapped
    def interrupt_stale_runs(self) -> int:
        """Mark runs still 'running' as interrupted. Call only while holding the store's run
        lock: then no other process can be running, so their processes died (SIGKILL)."""
        return int(self.conn.execute(
            "UPDATE runs SET status='interrupted' WHERE status='running'").rowcount)

    @mapped
    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in the store", path=self.path,
                             fix="run `grade status CLASS_DIR` to list runs")
        return self._run(row)

    @mapped
    def latest_run(self, class_dir: str | None = None) -> Run | None:
        if class_dir is None:
            row = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self.conn.execute(
                "SELECT * FROM runs WHERE class_dir=? ORDER BY id DESC LIMIT 1",
                (class_dir,)).fetchone()
        return self._run(row) if row is not None else None

    @mapped
    def runs(self) -> list[Run]:
        return [self._run(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY id")]

    @mapped
    def unfinished_regrade(self, class_dir: str, fingerprint: str, mode: str,
                           selection: dict[str, Any]) -> Run | None:
        """The class's latest run, if it is a regrade of the same kind that did not finish:
        rerunning the same command continues it (its epoch) instead of paying again."""
        last = self.latest_run(class_dir)
        if (last is None or last.mode != mode or last.fingerprint != fingerprint
                or last.selection != selection or last.status not in ("interrupted", "running")):
            return None
        return last
