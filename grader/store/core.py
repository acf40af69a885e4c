"""The store's connection: opening (a damaged or foreign file is refused, the schema is
migrated), the one transaction idiom `atomic()`, the store file written again from the open
connection when it vanishes, and SQLite errors turned into `StoreError` with a fix."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

from grader.errors import StoreError
from grader.store.migrations import migrate

P = ParamSpec("P")
T = TypeVar("T")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def store_error(e: sqlite3.Error, path: str) -> StoreError:
    text = str(e)
    low = text.lower()
    code = getattr(e, "sqlite_errorname", "") or ""
    if code in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE") \
            and os.path.exists(path):
        low = "disk is full"  # a write to an existing file failed: no space (or a size limit)
    if "locked" in low or "busy" in low:
        fix = "another grader process is writing to this store; wait for it, then run again"
    elif "disk is full" in low:
        text = f"cannot write (no space left on the disk, or a file size limit): {text}"
        fix = ("free some disk space, then run the same command again: finished grades and "
               "paid replies are kept")
    elif "readonly" in low or "read-only" in low:
        fix = "make the store and its folder writable, or pass --db PATH"
    elif "no such table" in low or "malformed" in low or "not a database" in low:
        fix = "the store is damaged or not a grader store; move it aside or pass another --db PATH"
    elif "unable to open" in low or "disk i/o" in low:
        fix = "the store file or its folder vanished or cannot be read; check the path (--db)"
    else:
        fix = "rerun with --debug and report this"
    return StoreError(f"grade store error: {text}", path=path, fix=fix)


def mapped(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn SQLite errors raised by a Store method into StoreError (with a fix)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as e:
            store = args[0]
            raise store_error(e, getattr(store, "path", "?")) from e

    return wrapper


IDENTITY_EVERY_S = 0.2  # how often a transaction checks that the store file is still there
ROWS_PER_BATCH = 500  # outcome rows per batch in `results` (bounded memory, few queries)


def loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def grader_store_problem(path: Path | str) -> str | None:
    """Why `path` is not an existing grader store (None when it is one). Reads the file
    read-only: never creates, migrates or changes anything, so it is safe on any file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if head != _SQLITE_MAGIC:
        return "is not an SQLite database"
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            names = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"cannot be opened read-only ({e})"
    if not {"schema_migrations", "runs", "outcomes"} <= names:
        return "is an SQLite database but not a grader store (no runs or schema_migrations table)"
    return None


UNSAVED_SUFFIX = ".unsaved-replies.jsonl"


def unsaved_path(db_path: str) -> Path:
    """Where replies that could not be committed (disk full) are kept until the next open:
    first beside the store (`unsaved_paths` lists the places tried after it)."""
    return Path(db_path + UNSAVED_SUFFIX)


def unsaved_paths(db_path: str) -> list[Path]:
    """Every place a reply that could not be committed may be kept, in the order tried: beside
    the store, then the user's state folder ($XDG_STATE_HOME/grader, else
    ~/.local/state/grader), then a private folder in the system temp folder. The commit failed
    most likely because the disk is full, and then the file beside the store cannot be written
    either: the later places are likely on another file system. There each store has its own
    file (its name and a digest of its full path), so that the next open of that store, and
    only of it, stores the replies."""
    first = unsaved_path(db_path)
    p = Path(db_path)
    name = f"{p.name}-{hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:16]}" \
        + UNSAVED_SUFFIX
    folders = []
    state = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(state):
        folders.append(Path(state) / "grader")
    else:
        with suppress(RuntimeError):  # no home folder known
            folders.append(Path.home() / ".local" / "state" / "grader")
    folders.append(Path(tempfile.gettempdir()) / f"grader-{os.getuid()}")
    return [first, *(f / name for f in folders)]


def _ours(folder: Path) -> bool:
    """A folder of our own, not a link: a reply file in a shared place (the temp folder) that
    another user could have put there must never be read into the store, nor written through
    their link."""
    try:
        st = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def keep_unsaved(db_path: str, line: str) -> Path | None:
    """Append `line` (synced) to the first of `unsaved_paths` that can be written; the path
    written, or None when none could be."""
    for n, path in enumerate(unsaved_paths(db_path)):
        try:
            if n:  # a place of ours away from the store: made private, and checked
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not _ours(path.parent):
                    continue
            with path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            continue
        return path
    return None


def kept_unsaved(db_path: str) -> list[Path]:
    """The reply files of this store that exist (in folders of ours, away from the store)."""
    return [p for n, p in enumerate(unsaved_paths(db_path))
            if p.is_file() and (n == 0 or _ours(p.parent))]


DAMAGED_FIX = ("move the file aside and rerun (its grades and paid replies are then not used), "
                "or save what is readable with `sqlite3 FILE .recover`")


class StoreCore:
    """One connection per process, used from one thread (the pipeline's event loop).

    `create=False` opens only an existing grader store (a path taken from a workbook must never
    turn some other SQLite file into one). The file is checked for damage when it is opened. If
    it vanishes while open (deleted, or its folder moved), the next write rewrites it from the
    open connection and carries on; `notices` says so."""

    def __init__(self, path: Path | str, *, create: bool = True):
        self.path = str(path)
        self._depth = 0
        self.notices: list[str] = []
        self._identity: tuple[int, int] | None = None
        self._identity_due = 0.0  # when _ensure_file next looks at the file
        if self.path != ":memory:":
            problem = None if create else grader_store_problem(self.path)
            if problem is not None:
                raise StoreError(
                    f"not a grade store written by grader: the file {problem}",
                    path=self.path, fix="pass --db PATH pointing at the grader.sqlite of the "
                    "class (by default CLASS_DIR/.grader/grader.sqlite)")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            import_unsaved_target = self.path
        else:
            import_unsaved_target = None
        try:
            self.conn = self._connect()
            existing = self.conn.execute(
                "SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if existing:
                self._check_integrity()
            migrate(self.conn)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"the grade store is damaged or not an SQLite file: {e}",
                             path=self.path, fix=DAMAGED_FIX) from None
        if import_unsaved_target is not None:
            self._identity = _identity(self.path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _check_integrity(self) -> None:
        """Damage inside the file is found here, not halfway through a report."""
        problems = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError("the grade store is damaged: " + "; ".join(problems[:3]),
                             path=self.path, fix=DAMAGED_FIX)

    def _ensure_file(self) -> None:
        """If the store file vanished or was replaced while open, write it again from this
        connection (everything committed so far) and continue on the new file. Looked at most
        every `IDENTITY_EVERY_S` (a stat per transaction cost 4% of a large run's CPU); what
        is committed in between stays in the open copy, so nothing is lost by looking later."""
        if self._identity is None:
            return
        t = time.monotonic()
        if t < self._identity_due:
            return
        self._identity_due = t + IDENTITY_EVERY_S
        if _identity(self.path) == self._identity:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        moved = Path(self.path)
        if moved.exists():  # replaced by another file: keep it, under another name
            moved.rename(moved.with_name(moved.name + f".replaced-{os.getpid()}"))
        self.conn.execute("VACUUM INTO ?", (self.path,))
        self.conn.close()
        self.conn = self._connect()
        self._identity = _identity(self.path)
        self.notices.append(
            f"the grade store {self.path} was deleted or replaced during the run; it was "
            "written again from the open copy, and nothing was lost")

    def close(self) -> None:
        self._identity_due = 0.0  # a file deleted since the last look is written again now
        with suppress(sqlite3.Error, OSError):
            self._ensure_file()
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All-or-nothing: BEGIN IMMEDIATE at the outermost level, a SAVEPOINT inside. The
        original exception always propagates, even if rolling back fails too."""
        outer = self._depth == 0
        name = f"sp{self._depth}"
        try:
            if outer:
                self._ensure_file()
            self.conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
        except sqlite3.Error as e:
            raise store_error(e, self.path) from e
        self._depth += 1
        try:
            yield
        except BaseException:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK" if outer else f"ROLLBACK TO {name}")
                if not outer:
                    self.conn.execute(f"RELEASE {name}")
            raise
        else:
            try:
                self.conn.execute("COMMIT" if outer else f"RELEASE {name}")
            except sqlite3.Error as e:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK" if outer else f"ROLLBACK TO {name}")
                raise store_error(e, self.path) from e
        finally:
            self._depth -= 1
