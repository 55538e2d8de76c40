"""Abuse of the evaluation side: caches that are not l2v's, weights changed at equal size and time,
outputs inside the model, cut tables, tables given as outputs, kills between writes, unwritable
folders, a full disk, damaged model files, Ctrl-C and HTML in model names."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from l2v_cli.eval import main
from l2v_eval import cache_folder, file_hashes
from l2v_eval.harness import EvalConfig, Evaluation, run_evaluation
from l2v_eval.results import CSV_NAME, PARQUET_NAME, ResultsStore, ResultsTableError, load_results

CARGO_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# cargo\n"


@pytest.fixture(autouse=True)
def private_hash_folder(tmp_path, monkeypatch):
    """Digests remembered under this test's own folder, never the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def model_copy(tiny_llama, tmp_path):
    return shutil.copytree(tiny_llama, tmp_path / "model")


def sts(model, out, *extra) -> list[str]:
    return ["--model", str(model), "--tasks", "L2VMiniSTS", "--output", str(out), "--no-progress",
            "--batch-size", "16", *extra]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class ReadOnly:
    """A folder this process cannot write: permissions, or the immutable attribute for root."""

    def __init__(self, path: Path):
        self.path, self.immutable = path, os.geteuid() == 0

    def __enter__(self):
        if self.immutable:
            if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(self.path)]).returncode != 0:
                pytest.skip("root without chattr +i: cannot make a read-only folder")
        else:
            self.path.chmod(0o555)
        return self.path

    def __exit__(self, *exc):
        if self.immutable:
            subprocess.run(["chattr", "-i", str(self.path)])
        else:
            self.path.chmod(0o755)


# ---------------------------------------------------------------- 1. cache clear deletes only l2v's files
def test_clear_refuses_a_folder_tagged_by_another_tool(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "CACHEDIR.TAG").write_text(CARGO_TAG)
    (other / "artifact.bin").write_bytes(b"\0" * 100)
    before = tree(other)
    assert main(["cache", "clear", str(other)]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "not l2v's" in err and "nothing deleted" in err and "Traceback" not in err
    assert tree(other) == before


def test_a_run_never_tags_or_fills_a_folder_it_did_not_create(tiny_llama, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    assert main(sts(tiny_llama, tmp_path / "out", "--embedding-cache", str(work))) == 2
    err = capsys.readouterr().err
    assert f"--embedding-cache {str(work)!r} already holds files that are not an l2v embedding cache (notes.txt)" in err
    assert tree(work) == {"notes.txt": b"mine"}  # no tag, no manifest, nothing else
    assert not (tmp_path / "out").exists()


def test_clear_keeps_foreign_files_inside_an_l2v_cache(tiny_llama, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(sts(tiny_llama, tmp_path / "out", "--embedding-cache", str(cache))) == 0
    manifest = json.loads((cache / "l2v-cache.json").read_text())
    assert manifest["tool"] == "l2v" and manifest["layout"] == 1 and manifest["created_by_l2v"] is True
    assert (cache / "CACHEDIR.TAG").is_file()  # l2v created this folder: backup tools may skip it
    chunks = list(cache.rglob("*.emb"))
    instruction_dir = chunks[0].parent
    foreign = {cache / "mine.txt": b"top", instruction_dir / "keep.emb": b"not a chunk",
               instruction_dir.parent / "notes.md": b"notes", cache / "photos" / "a.jpg": b"jpeg"}
    for path, data in foreign.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)

    assert main(["cache", "clear", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"Deleted l2v's files in {cache}" in out and "kept 4 item(s) that are not l2v's" in out
    assert all(path.read_bytes() == data for path, data in foreign.items())
    assert not list(cache.rglob("*.emb*")) or [p.name for p in cache.rglob("*.emb")] == ["keep.emb"]
    assert not list(cache.rglob("settings.json")) and not list(cache.rglob("instruction.txt"))
    assert not (cache / "l2v-cache.json").exists() and not (cache / "CACHEDIR.TAG").exists()
    assert main(["cache", "clear", str(cache)]) == 2  # no longer an l2v cache: refused
    assert all(path.read_bytes() == data for path, data in foreign.items())


def test_an_empty_folder_is_used_but_never_tagged_and_stays(tiny_llama, tmp_path, capsys):
    cache = tmp_path / "mine"
    cache.mkdir()
    assert main(sts(tiny_llama, tmp_path / "out", "--embedding-cache", str(cache))) == 0
    assert (cache / "l2v-cache.json").is_file() and not (cache / "CACHEDIR.TAG").exists()
    assert json.loads((cache / "l2v-cache.json").read_text())["created_by_l2v"] is False
    assert main(["cache", "clear", str(cache)]) == 0
    assert cache.is_dir() and not any(cache.iterdir())  # the user's folder stays, emptied of l2v's files


def test_a_folder_tagged_by_an_earlier_l2v_keeps_the_users_files(tmp_path, capsys):
    """Earlier versions wrote their tag into whatever folder --embedding-cache named."""
    work = tmp_path / "work"
    (work / "org__m" / "0123456789abcdef" / "no-instruction").mkdir(parents=True)
    (work / "CACHEDIR.TAG").write_text(cache_folder.TAG)
    (work / "org__m" / "0123456789abcdef" / "settings.json").write_text("{}")
    (work / "report.docx").write_bytes(b"the user's")
    assert main(["cache", "clear", str(work)]) == 0
    assert tree(work) == {"report.docx": b"the user's"}  # l2v's tag and files gone, the user's file kept
    assert main(sts("never-loaded", tmp_path / "out", "--embedding-cache", str(work))) == 2


def test_a_symlinked_cache_gets_a_clear_answer(tiny_llama, tmp_path, capsys):
    results = tmp_path / "results"
    real = tmp_path / "disk" / "cache"
    assert main(sts(tiny_llama, results / "l2v-mini", "--embedding-cache", str(real))) == 0
    link = results / "l2v-mini" / "embedding-cache"
    link.symlink_to(real)
    before = tree(real)
    capsys.readouterr()
    assert main(["cache", "clear", str(link)]) == 2
    err = capsys.readouterr().err
    assert f"{str(link)!r} is a symbolic link to {str(real)!r}" in err and "Traceback" not in err
    assert main(["cache", "clear", str(results)]) == 0
    assert f"Left {link}: a symbolic link to {str(real)!r}" in capsys.readouterr().out
    assert tree(real) == before


# ---------------------------------------------------------------- 2. weights changed at equal size and mtime
def flip_weights_keeping_size_and_mtime(model: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = model / "model.safetensors"
    before = weights.stat()
    with safe_open(weights, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(weights)
    for name in tensors:
        if "mlp.down_proj" in name:
            tensors[name] = -tensors[name]
    save_file(tensors, weights, metadata=metadata)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = weights.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def main_score(out: Path) -> float:
    table = load_results(out)
    return float(table.loc[table["is_main_score"], "value"].mean())


def test_new_weights_of_equal_size_and_mtime_get_a_new_revision(model_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(file_hashes, "REMEMBER_FROM_BYTES", 0)  # the tiny weights go through the digest cache too
    out = tmp_path / "out"

    def run(model, output, **kwargs):
        return run_evaluation(EvalConfig(model=str(model), tasks="L2VMiniSTS", output=output, show_progress=False,
                                         batch_size=16, **kwargs))

    time.sleep(0.2)  # files changed within the last 0.1 s are not remembered (file times have coarse ticks)
    first = run(model_copy, out)
    assert len(list(file_hashes.hash_folder().glob("*.json"))) >= 1  # digests are remembered
    flip_weights_keeping_size_and_mtime(model_copy)
    second = run(model_copy, out)
    assert second.model_revision != first.model_revision
    (outcome,) = second.outcomes
    assert outcome.status == "ok"  # not "already done"; and every text encoded again, none served stale:
    assert (outcome.encoded, outcome.reused) == (first.outcomes[0].encoded, first.outcomes[0].reused)
    fresh = run(model_copy, tmp_path / "fresh", embedding_cache="none")
    assert fresh.outcomes[0].main_score == outcome.main_score != first.outcomes[0].main_score
    assert run(model_copy, out, overwrite=True).outcomes[0].main_score == outcome.main_score


def test_digests_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(5 << 20))
    time.sleep(0.2)
    reads = []
    real_read = file_hashes._read_digest
    monkeypatch.setattr(file_hashes, "_read_digest", lambda path: reads.append(path) or real_read(path))
    digest = file_hashes.file_digest(big)
    assert file_hashes.file_digest(big) == digest and len(reads) == 1  # the second call reads nothing

    stat = big.stat()
    data = bytearray(big.read_bytes())
    data[-1] ^= 1
    big.write_bytes(bytes(data))
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only ctime tells
    time.sleep(0.2)
    assert file_hashes.file_digest(big) != digest and len(reads) == 2

    shutil.rmtree(file_hashes.hash_folder())  # a deleted digest folder: the file is read again
    assert file_hashes.file_digest(big) != digest and len(reads) == 3
    for entry in file_hashes.hash_folder().glob("*.json"):
        entry.write_text("[not json")  # a damaged entry: read again, never trusted
    file_hashes.file_digest(big)
    assert len(reads) == 4 and not list(file_hashes.hash_folder().glob(".*.tmp"))


# ---------------------------------------------------------------- 3. output inside the model folder
@pytest.mark.parametrize("flag", ["--output", "--embedding-cache"])
def test_folders_inside_the_model_are_refused_before_it_loads(model_copy, tmp_path, capsys, flag):
    before = tree(model_copy)
    args = sts(model_copy, model_copy / "eval") if flag == "--output" else \
        sts(model_copy, tmp_path / "out", "--embedding-cache", str(model_copy / "cache"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{flag} " in err and "lies inside the model folder" in err and "Loading" not in err
    assert tree(model_copy) == before


# ---------------------------------------------------------------- 4. + 8. cut tables, kills between writes
@pytest.fixture
def finished_run(tiny_llama, tmp_path):
    out = tmp_path / "out"
    assert main(sts(tiny_llama, out)) == 0
    return out


def test_a_cut_csv_is_refused_and_the_rows_come_back_from_mtebs_json(finished_run, tiny_llama, capsys):
    out = finished_run
    before = load_results(out)
    (out / PARQUET_NAME).unlink()
    text = (out / CSV_NAME).read_text()
    (out / CSV_NAME).write_text(text[:len(text) // 3])  # a copy cut mid-row
    for args in (["leaderboard", str(out)], sts(tiny_llama, out)):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"{str(out / CSV_NAME)!r} cannot be read: its last line is cut" in err and "Traceback" not in err
        assert str(out / "mteb" / "results") in err  # the hint names where mteb's JSON really is
    lines = text.splitlines(keepends=True)
    (out / CSV_NAME).write_text("".join(lines[:1] + lines[-3:]))  # cut at line ends: the main score's row lost
    with pytest.raises(ResultsTableError, match=r"task L2VMiniSTS \(test/default\) of local/tiny-llama-0 has rows "
                                                r"but not its main score"):
        load_results(out)

    (out / CSV_NAME).rename(out / "scores.cut.csv")
    evaluation = Evaluation(EvalConfig(model=str(tiny_llama), tasks="L2VMiniSTS", output=out, show_progress=False))
    assert [o.status for o in evaluation.run().outcomes] == ["ok"] and not evaluation.encoder.loaded
    keep = ["model", "model_revision", "task", "split", "subset", "metric", "value", "is_main_score", "n_samples"]
    pd.testing.assert_frame_equal(load_results(out)[keep], before[keep])


def test_a_kill_between_the_json_and_the_table_loses_no_sample_count(finished_run, tiny_llama):
    out = finished_run
    before = load_results(out)
    assert before["n_samples"].notna().all()
    (out / PARQUET_NAME).unlink()
    (out / CSV_NAME).unlink()
    stale = out / f".{PARQUET_NAME}.0123456789ab.tmp"  # what a write killed mid-way leaves
    stale.write_bytes(b"PAR1 half")
    assert main(sts(tiny_llama, out)) == 0
    after = load_results(out)
    assert after["n_samples"].tolist() == before["n_samples"].tolist()
    assert not list(out.glob(".scores.*.tmp"))


# ---------------------------------------------------------------- 7. leaderboard output that is an input
@pytest.mark.parametrize("name", [PARQUET_NAME, CSV_NAME])
def test_leaderboard_refuses_to_write_over_a_table_it_reads(finished_run, capsys, name):
    before = tree(finished_run)
    for source in (finished_run, finished_run.parent):
        assert main(["leaderboard", str(source), "-o", str(finished_run / name)]) == 2
        assert "the leaderboard reads; writing there would destroy it" in capsys.readouterr().err
    assert tree(finished_run) == before


# ---------------------------------------------------------------- 10. one clear line naming the thing
@pytest.mark.parametrize("content, problem", [("{not json", "cannot be read (JSONDecodeError"),
                                              ("[1, 2]", "holds a JSON list, not an object of settings")])
def test_cache_info_names_a_bad_settings_file(finished_run, capsys, content, problem):
    (settings,) = (finished_run / "embedding-cache").rglob("settings.json")
    settings.write_text(content)
    capsys.readouterr()
    assert main(["cache", "info", str(finished_run)]) == 0
    assert f"{settings} {problem}" in capsys.readouterr().out


def test_an_embedding_cache_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(sts("never-loaded", tmp_path / "out", "--embedding-cache", str(tmp_path / "file" / "cache"))) == 2
    err = capsys.readouterr().err
    assert f"{str(tmp_path / 'file')!r} is not a directory" in err and "Traceback" not in err
    assert "Exception ignored" not in err


def test_a_read_only_cache_folder_fails_before_the_model_loads(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with ReadOnly(locked):
        with pytest.raises(ValueError, match=r"--embedding-cache .* is not writable"):
            EvalConfig(model="never-loaded", tasks="L2VMiniSTS", output=tmp_path / "out",
                       embedding_cache=locked / "cache")


def test_leaderboard_and_report_into_a_read_only_folder_are_one_line(finished_run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    with ReadOnly(locked):
        assert main(["leaderboard", str(finished_run), "-o", str(locked / "board.csv")]) == 2
        assert main(["report", str(finished_run), "-o", str(locked / "report")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("l2v-eval: error:")]
    assert len(err) == 2 and all("is not writable" in line and str(locked) in line for line in err)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_table(tiny_llama, tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "out"
        assert main(sts(tiny_llama, out)) == 0
        before = load_results(out)
        with open(disk / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while f.write(b"\0" * 4096):
                    pass
            except OSError:
                pass
        capsys.readouterr()
        assert main(["--model", str(tiny_llama), "--tasks", "L2VMiniSTS,L2VMiniPairClassification", "--output",
                     str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "No space left on device" in err[-1] and "was left as it was" in err[-1]
        assert "Traceback" not in "\n".join(err)
        pd.testing.assert_frame_equal(load_results(out), before)
    finally:
        subprocess.run(["umount", str(disk)])


def test_modules_json_with_a_list_type_is_named(model_copy, tmp_path):
    from l2v_core.st_model import UnsafeModelError, check_modules_json

    (model_copy / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                          "type": ["l2v_core.st_modules.LLM2VecModule"]}]))
    with pytest.raises(UnsafeModelError, match=r"modules.json: entry 0 \(name '0'\) has type \['l2v_core"):
        check_modules_json(model_copy)


def test_a_truncated_gguf_is_named_as_such(smollm2_gguf, tmp_path):
    from l2v_core.errors import ModelLoadError
    from l2v_core.loading import load_tokenizer

    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as f:
        cut.write_bytes(f.read(os.path.getsize(smollm2_gguf) // 2))
    with pytest.raises(ModelLoadError, match=r"cut.gguf is not a complete GGUF file .*truncated or damaged"):
        load_tokenizer(str(cut))


def test_ctrl_c_prints_what_finished_and_a_rerun_resumes(tiny_llama, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    run_mteb = Evaluation._run_mteb
    calls = []

    def interrupted_on_the_second_task(self, task, label):
        calls.append(task.metadata.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_mteb(self, task, label)

    monkeypatch.setattr(Evaluation, "_run_mteb", interrupted_on_the_second_task)
    args = ["--model", str(tiny_llama), "--tasks", "L2VMiniSTS,L2VMiniPairClassification", "--output", str(out),
            "--no-progress"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (f"l2v-eval: interrupted: 1 of 2 task(s) finished, their results are in {out}; re-running the "
                   "same command resumes (finished tasks are skipped, vectors already encoded are read from the "
                   "embedding cache)")
    monkeypatch.setattr(Evaluation, "_run_mteb", run_mteb)
    assert main(args) == 0
    assert "1 evaluated, 1 already done" in capsys.readouterr().out


# ---------------------------------------------------------------- 11. HTML in model names
def test_report_markdown_shows_html_in_model_names_as_text(finished_run, tmp_path):
    store = ResultsStore(finished_run)
    table = load_results(finished_run).assign(model="org/<img src=x onerror=alert(1)>")
    store.write(table)
    md = (tmp_path / "report" / "report.md")
    assert main(["report", str(finished_run), "-o", str(md.parent)]) == 0
    text = md.read_text()
    assert "<img src=x" not in text and "org/&lt;img src=x onerror=alert(1)&gt;" in text
