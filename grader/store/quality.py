"""Grading quality: human scores imported for a class, and calibration results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grader.grading.records import Calibration, HumanScore
from grader.store.core import StoreCore, mapped, now


class Quality(StoreCore):
    # --- human scores and calibrations (grading quality) -----------------------------------

    @mapped
    def import_human_scores(self, class_dir: str, path: str, sha256: str,
                            scores: Sequence[HumanScore]) -> int | None:
        """Store one file's human scores in one transaction; None when this class already
        holds that file (same hash): importing twice changes nothing."""
        with self.atomic():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO human_imports (class_dir, path, sha256, rows, imported_at)"
                " VALUES (?,?,?,?,?)", (class_dir, path, sha256, len(scores), now()))
            if not cur.rowcount:
                return None
            import_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO human_scores (import_id, class_dir, student_id, criterion_id, rater,"
                " score) VALUES (?,?,?,?,?,?)",
                [(import_id, class_dir, h.student_id, h.criterion_id, h.rater, h.score)
                 for h in scores])
        return import_id

    @mapped
    def class_student_ids(self, class_dir: str) -> set[str]:
        """Every student a run of the class graded or listed (`grade human import` bounds a
        file's rows by the class's students: these and the class folder's)."""
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT o.student_id FROM outcomes o JOIN runs r ON r.id = o.run_id"
            " WHERE r.class_dir = ?", (class_dir,))}

    @mapped
    def human_scores(self, class_dir: str) -> list[HumanScore]:
        """The class's human scores: per (student, criterion, rater), the newest import's."""
        rows = self.conn.execute(
            "SELECT student_id, criterion_id, rater, score FROM human_scores h"
            " WHERE class_dir=? AND import_id = (SELECT MAX(import_id) FROM human_scores x"
            " WHERE x.class_dir = h.class_dir AND x.student_id = h.student_id"
            " AND x.criterion_id = h.criterion_id AND x.rater = h.rater)"
            " ORDER BY rater, student_id, criterion_id", (class_dir,))
        return [HumanScore(r["student_id"], r["criterion_id"], r["rater"], r["score"])
                for r in rows]

    @mapped
    def save_calibration(self, *, class_dir: str, fingerprint: str, run_id: int, rater: str,
                         students: Sequence[str], figures: dict[str, dict[str, Any]]) -> int:
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO calibrations (class_dir, fingerprint, run_id, rater, created_at,"
                " students_json, figures_json) VALUES (?,?,?,?,?,?,?)",
                (class_dir, fingerprint, run_id, rater, now(), json.dumps(list(students)),
                 json.dumps(figures)))
        return int(cur.lastrowid or 0)

    @mapped
    def latest_calibration(self, class_dir: str, fingerprint: str) -> Calibration | None:
        r = self.conn.execute(
            "SELECT * FROM calibrations WHERE class_dir=? AND fingerprint=?"
            " ORDER BY id DESC LIMIT 1", (class_dir, fingerprint)).fetchone()
        if r is None:
            return None
        return Calibration(r["id"], r["class_dir"], r["fingerprint"], r["run_id"], r["rater"],
                           r["created_at"], json.loads(r["students_json"]),
                           json.loads(r["figures_json"]))
