"""Opening the store of a class for the commands that read it (`grade status`, `grade report`,
`grade eval`, `eval --compare`, `grade tune export`): one way, so they agree.

The store must exist already and be a grader store (it is never created, and no other SQLite
file is turned into one); opening it brings its schema up to date, as every open does. The run
read is the one asked for, else the class's latest. A store inside the class folder (the
default, CLASS_DIR/.grader/) whose runs are all of one other folder is the class's own, moved
or renamed with it; any other store whose runs are all of other class folders is refused with
their names, never read in their place (`--db` pointing at another class's store).

The commands that write (`grade run`, every `grade batch` command) go further, through
`follow_move`: the records of a class folder that was moved are carried over to its new path
(named in a notice), so its batch jobs are found and collected, not lost and paid again; a store
that belongs to another class folder still in place is refused.
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
    raise StoreError(
        f"the store holds no run of {folder}; its runs are of {_listed(others)}",
        path=store.path,
        fix="pass the class folder those runs graded, or --db with this class's own store"
        + (", or --run N" if takes_run else ""))


def follow_move(store: Store, class_dir: Path) -> str | None:
    """Carry the store's records over to `class_dir` when the class folder was moved (or
    renamed) since they were written; returns the notice that says so (the caller shows it
    before anything is sent), None when nothing moved.

    Moved: the store knows no record of `class_dir`, its records are all of one other folder,
    and that folder is gone (a move leaves nothing behind). A store inside the class folder
    (the default, CLASS_DIR/.grader/) whose records are of another folder that is still there
    is not this class's own (copied in with a class folder, or written by `--db` for another
    class): refused, naming that folder. A store outside the class folder (`--db`) may hold
    several classes: a folder new to it, beside folders still in place, is one more class,
    unless exactly one of its folders is gone and had the same name (`/x/B` -> `/y/B`): that
    class was moved, and its records (and open batch jobs) are carried over, said aloud."""
    folder = class_dir.resolve()
    known = store.class_folders()
    if not known or str(folder) in known:
        return None
    gone = [k for k in known if not Path(k).exists()]
    if (len(known) == 1 and gone) or (len(gone) == 1 and Path(gone[0]).name == folder.name):
        runs, open_jobs = store.move_class(gone[0], str(folder))
        return (f"the class folder was moved from {gone[0]} to {folder}: its {runs} run(s) "
                f"and {open_jobs} batch job(s) still open were carried over to the new path")
    stranded = [k for k in gone if store.batch_jobs(k, open_only=True)]
    if len(stranded) == 1:  # money in flight for a folder that is gone: never guessed
        raise StoreError(
            f"the store holds batch jobs still open for {stranded[0]}, which is no longer "
            f"there, and knows nothing of {folder}: if this is that class moved, its jobs "
            "cannot be told to be its own by the name", path=store.path,
            fix=f"name the folder {Path(stranded[0]).name} again (or move it back to "
                f"{stranded[0]}) and run the command again; if it is another class, pass "
                "--db PATH with a store of its own")
    if folder not in Path(store.path).resolve().parents:
        return None
    still = [k for k in known if Path(k).exists()]
    whose = (f"another class folder, {_listed(still)}, which is still there" if still else
             f"{len(known)} other class folders, {_listed(known)}, none of them here (which "
             "one was moved here cannot be told)")
    raise StoreError(
        f"the store inside {folder} holds the runs and batch jobs of {whose}: it is not this "
        "class's store (copied in with the folder, or written with --db for another class)",
        path=store.path,
        fix=(f"grade {_listed(still)} (whose store it is), or " if still else "")
        + f"move {Path(store.path).parent} aside to start this class's own store, or pass "
        "--db PATH")


def _listed(folders: list[str]) -> str:
    return ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3
                                     else "")
