"""MNTP on the real SmolLM2-135M GGUF: the path a real training run takes (loads in ~30 s)."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from l2v_core.training import load_config, sample_path, train

pytestmark = pytest.mark.slow


def test_mntp_step_on_the_bundled_gguf(smollm2_gguf, tmp_path):
    out = tmp_path / "mntp"
    config = load_config("mntp", sample_path("mntp.json"), dict(
        base_model="bundled", output_dir=str(out), max_steps=1, batch_size=2, max_length=32, progress_bar=False))
    result = train("mntp", config)
    loss = pd.read_csv(result.metrics_file).loss.iloc[0]
    assert math.isfinite(loss) and 1.0 < loss < 15.0
    adapter = out / "adapter"
    # The base is named portably, never by a path into this machine's site-packages.
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "bundled"
    keys = list(load_file(adapter / "adapter_model.safetensors"))
    assert len(keys) == 30 * 7 * 2 and all(k.startswith("base_model.model.layers.") for k in keys)


def mini_retrieval_evaluator(dims: int):
    """l2v-mini's retrieval task as sentence-transformers' own retrieval evaluator, on vectors cut to ``dims``."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    folder = Path(__file__).resolve().parents[1] / "l2v_eval" / "tasks" / "mini"
    rows = {name: [json.loads(line) for line in (folder / f"retrieval_{name}.jsonl").read_text().splitlines()]
            for name in ("queries", "corpus", "qrels")}
    relevant: dict[str, set] = {}
    for row in rows["qrels"]:
        relevant.setdefault(row["query_id"], set()).add(row["doc_id"])
    return InformationRetrievalEvaluator({q["id"]: q["text"] for q in rows["queries"]},
                                         {d["id"]: d["text"] for d in rows["corpus"]}, relevant,
                                         truncate_dim=dims, name=f"mini{dims}", show_progress_bar=False)


def test_a_matryoshka_run_s_64_dim_vectors_retrieve_better_than_the_untrained_model_s(smollm2_gguf, tmp_path):
    from sentence_transformers import SentenceTransformer

    from l2v_core import LLM2Vec
    from l2v_core.st_modules import LLM2VecModule

    evaluator = mini_retrieval_evaluator(64)
    pairs = Path(__file__).resolve().parents[1] / "l2v_eval" / "tasks" / "real" / "train" / "pairs.jsonl.gz"
    untrained = LLM2Vec.from_pretrained("bundled", enable_bidirectional=True, pooling_mode="mean", max_length=64,
                                        dtype="float32")
    before = evaluator(SentenceTransformer(modules=[LLM2VecModule(untrained)]))["mini64_cosine_ndcg@10"]
    del untrained
    config = load_config("supervised", None, dict(
        base_model="bundled", train_file=str(pairs), output_dir=str(tmp_path / "mrl"), max_steps=20, batch_size=8,
        max_length=64, learning_rate=3e-4, warmup_steps=2, temperature=0.05, lora_r=8, lora_alpha=16,
        save_steps=0, merge_output=False, progress_bar=False, dtype="float32", loss="MatryoshkaLoss",
        loss_args={"matryoshka_dims": [576, 64]}))
    result = train("supervised", config)
    trained = LLM2Vec.from_pretrained(result.adapter_dir, dtype="float32")
    after = evaluator(SentenceTransformer(modules=[LLM2VecModule(trained)]))["mini64_cosine_ndcg@10"]
    assert after > before + 0.05, (before, after)
