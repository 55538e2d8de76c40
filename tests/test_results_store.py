"""The tidy results table under concurrent writers, kills, lost or damaged files, and unwritable folders."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from l2v_eval import results
from l2v_eval.harness import EvalConfig, Evaluation, run_evaluation
from l2v_eval.results import PARQUET_NAME, CSV_NAME, ResultsStore, ResultsTableError, load_results

REPO = Path(__file__).resolve().parents[1]


def row(model: str, task: str, value: float = 0.5, status: str = "ok") -> dict:
    return {"model": model, "model_revision": "r1", "experiment": "", "task": task, "task_type": "STS",
            "split": "test", "subset": "default", "metric": "cosine_spearman", "value": value,
            "is_main_score": True, "status": status, "created_at": "2026-01-01T00:00:00+00:00"}


# A writer process: waits for the start signal, then upserts one row per task, one upsert at a time.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from l2v_eval.results import ResultsStore
    out, model, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = ResultsStore(out)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    for k in range(n):
        store.upsert([{"model": model, "model_revision": "r1", "experiment": "", "task": f"T{k:04d}",
                       "split": "test", "subset": "default", "metric": "m", "value": float(k), "status": "ok"}])
        print(k, flush=True)
""")


def start_writer(out: Path, model: str, n: int, go: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), model, str(n), str(go)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_concurrent_writers_lose_no_rows(tmp_path):
    out, go, n = tmp_path / "res", tmp_path / "go", 40
    writers = [start_writer(out, model, n, go) for model in ("org/a", "org/b")]
    go.touch()  # both start upserting at the same moment
    try:
        for proc in writers:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for table in (load_results(out / PARQUET_NAME), load_results(out / CSV_NAME)):
        assert len(table) == 2 * n
        for model in ("org/a", "org/b"):
            assert sorted(table.loc[table["model"] == model, "task"]) == [f"T{k:04d}" for k in range(n)]


def test_killed_writer_leaves_a_readable_table_and_no_stuck_lock(tmp_path, monkeypatch):
    out, go = tmp_path / "res", tmp_path / "go"
    go.touch()
    proc = start_writer(out, "org/a", 100_000, go)
    try:
        for _ in range(15):  # let it write a few tables, then kill it at an arbitrary point
            assert proc.stdout.readline(), proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    table = load_results(out)
    tasks = sorted(table["task"])
    assert len(tasks) >= 15 and tasks == [f"T{k:04d}" for k in range(len(tasks))]  # every upsert whole, none lost
    monkeypatch.setattr(results, "LOCK_TIMEOUT_S", 10.0)  # a lock left held would fail here, not hang
    after = ResultsStore(out).upsert([row("org/b", "STS12")])
    assert len(after) == len(tasks) + 1


def test_missing_parquet_is_rebuilt_from_csv(tmp_path):
    store = ResultsStore(tmp_path)
    store.upsert([row("org/a", "STS12"), row("org/a", "STS13")])
    (tmp_path / PARQUET_NAME).unlink()
    assert len(store.load()) == 2  # read from the CSV
    store.upsert([row("org/b", "STS12")])
    for table in (pd.read_parquet(tmp_path / PARQUET_NAME), load_results(tmp_path / CSV_NAME)):
        assert sorted(zip(table["model"], table["task"])) == [("org/a", "STS12"), ("org/a", "STS13"), ("org/b", "STS12")]


@pytest.mark.parametrize("damaged, other_exists", [(PARQUET_NAME, True), (PARQUET_NAME, False), (CSV_NAME, False)])
def test_unreadable_table_is_refused_and_left_untouched(tmp_path, damaged, other_exists):
    store = ResultsStore(tmp_path)
    store.upsert([row("org/a", "STS12")])
    other = tmp_path / (CSV_NAME if damaged == PARQUET_NAME else PARQUET_NAME)
    if not other_exists:
        other.unlink()
    bad = tmp_path / damaged
    bad.write_bytes(b"PAR1\x00garbage, not a table" if damaged == PARQUET_NAME else b"\xff\xfe\x00 not UTF-8 text")
    content = bad.read_bytes()
    with pytest.raises(ResultsTableError, match=f"{damaged}.*cannot be read.*nothing was written"):
        store.upsert([row("org/b", "STS12")])
    with pytest.raises(ValueError, match="cannot be read"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="cannot be read"):  # l2v-eval refuses before loading any model
        EvalConfig(model="unused-model", tasks="l2v-mini", output=tmp_path)
    assert bad.read_bytes() == content
    assert other.exists() == other_exists
    if damaged == PARQUET_NAME and other_exists:
        # what the message says to do: move the damaged file aside, and the CSV rebuilds the table
        bad.rename(tmp_path / "scores.parquet.bad")
        assert list(store.upsert([row("org/b", "STS12")])["model"]) == ["org/a", "org/b"]


def test_tables_get_the_mode_a_plain_write_gives(tmp_path):
    old = os.umask(0o002)
    try:
        ResultsStore(tmp_path).upsert([row("org/a", "STS12")])
    finally:
        os.umask(old)
    for name in (PARQUET_NAME, CSV_NAME):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o664


class ReadOnly:
    """Make a folder unwritable for this process: permissions for a normal user, the immutable
    attribute for root (who ignores permissions); skip where neither works."""

    def __init__(self, path: Path):
        self.path, self.immutable = path, os.geteuid() == 0

    def __enter__(self):
        if self.immutable:
            if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(self.path)]).returncode != 0:
                pytest.skip("running as root without chattr +i: cannot make a read-only folder")
        else:
            self.path.chmod(0o555)
        try:
            (self.path / "probe").touch()
        except OSError:
            return self.path
        self.__exit__()
        pytest.skip("could not make a read-only folder here")

    def __exit__(self, *exc):
        if self.immutable:
            subprocess.run(["chattr", "-i", str(self.path)])
        else:
            self.path.chmod(0o755)


def test_read_only_output_fails_before_the_model_loads(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with ReadOnly(locked):
        for output in (locked, locked / "new" / "deeper"):
            with pytest.raises(ValueError, match=r"--output .* is not writable"):
                EvalConfig(model="never-loaded", tasks="l2v-mini", output=output)
    EvalConfig(model="never-loaded", tasks="l2v-mini", output=locked / "new")  # writable again: accepted
    assert not (locked / "new").exists()  # the check leaves nothing behind


def test_lost_tables_are_rebuilt_from_mteb_json_without_encoding(tiny_llama, tmp_path):
    def config():
        return EvalConfig(model=str(tiny_llama), tasks="L2VMiniSTS", output=tmp_path, show_progress=False, batch_size=16)

    assert run_evaluation(config()).exit_code == 0
    before = load_results(tmp_path)
    (tmp_path / PARQUET_NAME).unlink()
    (tmp_path / CSV_NAME).unlink()
    evaluation = Evaluation(config())
    assert [o.status for o in evaluation.run().outcomes] == ["ok"]
    assert not evaluation.encoder.loaded
    after = load_results(tmp_path)
    keep = ["model", "model_revision", "task", "split", "subset", "metric", "value", "is_main_score"]
    pd.testing.assert_frame_equal(after[keep], before[keep])


def test_a_held_lock_makes_writers_wait_then_fail_clearly(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.upsert([row("org/a", "STS12")])
    monkeypatch.setattr(results, "LOCK_TIMEOUT_S", 0.5)
    # Another process holding the lock: a child that takes it and sleeps.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
                               str(store.lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsTableError, match=r"another process writing this results folder holds it"):
            store.upsert([row("org/b", "STS12")])
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert len(store.upsert([row("org/b", "STS12")])) == 2  # released by the holder's death
