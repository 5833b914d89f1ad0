"""Two new runs that start at the same moment into a folder a finished run used: both start, in two different
numbered folders (a run that holds the folder only to see it is used must not get the other refused)."""

import multiprocessing as mp

from dr_fdsl import run_lock
from dr_fdsl.engine.build import lock_free_folder

TRIALS = 40


def _start(root, barrier, results):
    for i in range(TRIALS):
        barrier.wait()
        try:
            got = lock_free_folder(f"{root}/t{i}/x")
        except run_lock.FolderLockedError as err:
            got = f"refused: {err}"
        barrier.wait()  # both have decided while holding what they took
        if not got.startswith("refused"):
            run_lock.release(got)
        results.put((i, got))


def test_two_new_runs_into_a_used_folder_both_start_in_different_folders(tmp_path):
    for i in range(TRIALS):
        (tmp_path / f"t{i}" / "x").mkdir(parents=True)
        (tmp_path / f"t{i}" / "x" / "config.yaml").write_text("a finished run's\n")
    context = mp.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_start, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    got = [results.get(timeout=120) for _ in range(2 * TRIALS)]
    for w in workers:
        w.join(timeout=60)
    refused = [g for _, g in got if g.startswith("refused")]
    assert not refused, f"{len(refused)} of {2 * TRIALS} starts refused, e.g. {refused[0]}"
    folders = {}
    for i, g in got:
        folders.setdefault(i, set()).add(g)
    assert all(len(f) == 2 and not any(g.endswith("/x") for g in f) for f in folders.values()), folders
