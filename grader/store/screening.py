"""The model-based injection check's verdicts (`grader.grading.screen`): content-addressed by
the hash of what was asked, insert-or-ignore, so a text is paid for once whatever the run."""

from __future__ import annotations

from grader.grading.records import ScreenVerdict
from grader.store.core import StoreCore, mapped, now


class Screening(StoreCore):
    # --- injection checks ------------------------------------------------------------------

    @mapped
    def screened(self, key: str) -> ScreenVerdict | None:
        """The stored verdict for this check of this text, if it was ever paid for."""
        r = self.conn.execute(
            "SELECT key, model, injection, reason, prompt_tokens, output_tokens, cost_usd,"
            " readable FROM injection_checks WHERE key=?", (key,)).fetchone()
        if r is None:
            return None
        return ScreenVerdict(r["key"], r["model"], bool(r["injection"]), r["reason"],
                             r["prompt_tokens"], r["output_tokens"], r["cost_usd"],
                             bool(r["readable"]))

    @mapped
    def save_screen(self, v: ScreenVerdict, class_dir: str, run_id: int | None = None) -> None:
        """Keep a verdict the moment it is paid for (the first one for a key stays), with the
        run that paid (None: asked before the run was recorded, `claim_screens`)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO injection_checks (key, model, injection, reason,"
            " prompt_tokens, output_tokens, cost_usd, run_class, created_at, readable, run_id)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (v.key, v.model, int(v.injection), v.reason, v.prompt_tokens, v.output_tokens,
             v.cost_usd, class_dir, now(), int(v.readable), run_id))

    @mapped
    def claim_screens(self, keys: list[str], run_id: int) -> None:
        """Book the checks `keys` (asked before their run was recorded: a batch submit checks
        first) to `run_id`; checks already booked to a run stay with it."""
        with self.atomic():
            for key in keys:
                self.conn.execute("UPDATE injection_checks SET run_id=? WHERE key=? AND run_id"
                                  " IS NULL", (run_id, key))
