"""Opening the store of a class for the commands that read it (`grade status`, `grade report`,
`grade eval`, `eval --compare`, `grade tune export`): one way, so they agree.

The store must exist already and be a grader store (it is never created, and no other SQLite
file is turned into one); opening it brings its schema up to date, as every open does. The run
read is the one asked for, else the class's latest. A store inside the class folder (the
default, CLASS_DIR/.grader/) whose runs are all of one other folder is the class's own, moved
or renamed with it; any other store whose runs are all of other class folders is refused with
their names, never read in their place (`--db` pointing at another class's store).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grader.config.settings import Settings, db_path
from grader.errors import StoreError
from grader.grading.records import Run

from . import Store


@contextmanager
def class_store(class_dir: Path, settings: Settings) -> Iterator[Store]:
    """The class's existing store (`--db`, or CLASS_DIR/.grader/grader.sqlite)."""
    path = db_path(class_dir, settings)
    if not path.exists():
        raise StoreError("no grade store yet", path=path,
                         fix=f"run `grade run {class_dir}` first, or pass --db PATH")
    with Store(path, create=False) as store:
        yield store


def class_run(store: Store, class_dir: Path, run_id: int | None = None, *,
              takes_run: bool = True) -> Run | None:
    """Run `run_id`, else the latest run of `class_dir`; None when the store holds no run at
    all. A store whose runs are all of other class folders is an error naming them, unless it
    lies inside the class folder and holds one folder's runs. `takes_run`: the command has a
    --run option (the fix names it)."""
    if run_id is not None:
        return store.run(run_id)
    folder = class_dir.resolve()
    run = store.latest_run(str(folder))
    if run is not None:
        return run
    others = sorted({r.class_dir for r in store.runs()})
    if not others:
        return None
    if len(others) == 1 and folder in Path(store.path).resolve().parents:
        return store.latest_run(others[0])  # the class folder was moved or renamed
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    raise StoreError(
        f"the store holds no run of {folder}; its runs are of {shown}", path=store.path,
        fix="pass the class folder those runs graded, or --db with this class's own store"
        + (", or --run N" if takes_run else ""))
