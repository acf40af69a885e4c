"""The teacher's decisions (append-only, per student and criterion) and the answer groups a
teacher may decide at once."""

from __future__ import annotations

from collections.abc import Sequence

from grader.grading.records import Decision, GroupMember
from grader.store.core import StoreCore, mapped, now


class Review(StoreCore):
    # --- teacher decisions -------------------------------------------------------------------

    @mapped
    def decisions(self) -> dict[str, list[Decision]]:
        """Every teacher decision, grouped by student, oldest first."""
        out: dict[str, list[Decision]] = {}
        for r in self.conn.execute("SELECT * FROM decisions ORDER BY id"):
            out.setdefault(r["student_id"], []).append(Decision(
                student_id=r["student_id"], field=r["field"], value=r["value"],
                criterion_id=r["criterion_id"], submission_id=r["submission_id"],
                ai_basis=r["ai_basis"], run_id=r["run_id"], grade_id=r["grade_id"],
                cell=r["cell"], workbook_sha256=r["workbook_sha256"],
                decided_at=r["decided_at"], id=r["id"], group=r["group_label"],
                workbook_base=r["workbook_base"]))
        return out

    @mapped
    def add_decisions(self, decisions: Sequence[Decision]) -> None:
        """Append decisions in one transaction (nothing is ever updated or deleted)."""
        stamp = now()
        with self.atomic():
            self.conn.executemany(
                "INSERT INTO decisions (student_id, criterion_id, field, value, submission_id,"
                " ai_basis, run_id, grade_id, cell, workbook_sha256, decided_at, group_label,"
                " workbook_base) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(d.student_id, d.criterion_id, d.field, d.value, d.submission_id, d.ai_basis,
                  d.run_id, d.grade_id, d.cell, d.workbook_sha256, d.decided_at or stamp,
                  d.group, d.workbook_base) for d in decisions])

    # --- answer groups -----------------------------------------------------------------------

    @mapped
    def save_groups(self, run_id: int, members: Sequence[GroupMember]) -> None:
        """A run's answer groups, replacing the ones computed before (one transaction)."""
        with self.atomic():
            self.conn.execute("DELETE FROM answer_groups WHERE run_id=?", (run_id,))
            self.conn.executemany(
                "INSERT INTO answer_groups (run_id, student_id, label, representative, flag)"
                " VALUES (?,?,?,?,?)",
                [(run_id, m.student_id, m.label, int(m.representative), m.flag)
                 for m in members])

    @mapped
    def answer_groups(self, run_id: int) -> list[GroupMember]:
        """A run's answer groups as last computed (empty: never computed), by label."""
        return [GroupMember(r["student_id"], r["label"], bool(r["representative"]), r["flag"])
                for r in self.conn.execute(
                    "SELECT * FROM answer_groups WHERE run_id=?"
                    " ORDER BY CAST(SUBSTR(label, 2) AS INTEGER), label, student_id",
                    (run_id,))]
