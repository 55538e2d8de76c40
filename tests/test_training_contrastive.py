"""SimCSE and supervised contrastive training on a tiny model."""
import math

import pandas as pd
import pytest
import torch

from l2v_core import LLM2Vec
from l2v_core.training import load_config, sample_path, train
from l2v_core.training import ConfigError
from l2v_core.training.contrastive import build_loss, load_encoder
from tests import tiny

TEXTS = ["A man is playing a guitar on the street.", "Paris is the capital and most populous city of France.",
         "Cats and dogs are common household pets."]


def test_the_loss_is_sentence_transformers_infonce_at_the_temperature(tiny_llama, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import (CachedMultipleNegativesRankingLoss, MatryoshkaLoss,
                                              MultipleNegativesRankingLoss)

    from l2v_core.st_modules import LLM2VecModule

    config = load_config("supervised", None, dict(base_model=str(tiny_llama), train_file="t.jsonl",
                                                  output_dir=str(tmp_path), max_length=32))
    model = SentenceTransformer(modules=[LLM2VecModule(load_encoder(config))])
    loss = build_loss(model, config)
    assert type(loss) is MultipleNegativesRankingLoss and loss.scale == pytest.approx(50.0)  # 1 / 0.02
    assert loss.gather_across_devices
    config.gradcache_chunk_size = 3
    cached = build_loss(model, config)
    assert type(cached) is CachedMultipleNegativesRankingLoss and cached.mini_batch_size == 3
    config.loss, config.loss_args = "MatryoshkaLoss", {"matryoshka_dims": [32, 16]}
    wrapped = build_loss(model, config)
    assert type(wrapped) is MatryoshkaLoss and type(wrapped.loss) is CachedMultipleNegativesRankingLoss
    config.loss_args = {"matryoshka_dimz": [8]}
    with pytest.raises(ConfigError, match="`loss_args` do not fit MatryoshkaLoss"):
        build_loss(model, config)
    # A hard negative that equals the positive caps the best reachable loss at log 2 (hard negatives count).
    q = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    assert loss.compute_loss_from_embeddings([q, q, q.clone()], None) >= math.log(2) - 1e-4
    assert loss.compute_loss_from_embeddings([q, q], None) < 0.05


def test_dropout_is_the_augmentation(tiny_llama, tmp_path):
    config = load_config("simcse", None, dict(base_model=str(tiny_llama), train_file=sample_path("fortunes.txt"),
                                              output_dir=str(tmp_path), max_length=32))
    encoder = load_encoder(config)
    attention = [m for m in encoder.model.modules() if hasattr(m, "attention_dropout")]
    assert attention and all(m.attention_dropout == 0.3 for m in attention)
    assert encoder.model.peft_config["default"].lora_dropout == 0.3
    features = encoder.tokenize(TEXTS + TEXTS)
    encoder.train()
    with torch.no_grad():
        first, second = encoder(features).chunk(2)
        again = encoder(features)[:3]
    assert not torch.allclose(first, second, atol=1e-4)  # two views of a text differ ...
    assert not torch.allclose(first, again, atol=1e-4)  # ... and so do two passes
    encoder.eval()
    with torch.no_grad():
        first, second = encoder(features).chunk(2)
    torch.testing.assert_close(first, second)  # without dropout the views coincide


def test_simcse_loss_falls_and_result_loads(tiny_llama, tmp_path):
    out = tmp_path / "simcse"
    config = load_config("simcse", None, dict(
        base_model=str(tiny_llama), train_file=sample_path("fortunes.txt"), output_dir=str(out), max_steps=24,
        batch_size=8, max_length=32, learning_rate=2e-3, save_steps=0, progress_bar=False,
        # A random tiny model tells texts apart so easily that at 0.05 the loss starts near 0.
        temperature=0.2))
    result = train("simcse", config)
    metrics = pd.read_csv(result.metrics_file)
    first, last = metrics.loss.head(6).mean(), metrics.loss.tail(6).mean()
    assert last < 0.7 * first, (first, last)
    assert result.merged_dir == str(out)
    merged = LLM2Vec.from_pretrained(str(out)).encode(TEXTS, show_progress_bar=False)
    chained = LLM2Vec.from_pretrained(str(out / "adapter")).encode(TEXTS, show_progress_bar=False)
    torch.testing.assert_close(merged, chained, rtol=1e-4, atol=1e-4)


def test_supervised_loss_with_hard_negatives_falls(tiny_llama, tmp_path):
    out = tmp_path / "supervised"
    config = load_config("supervised", sample_path("supervised.json"), dict(
        base_model=str(tiny_llama), output_dir=str(out), max_steps=24, batch_size=8, max_length=48,
        learning_rate=2e-3, warmup_steps=0, save_steps=0, merge_output=False, progress_bar=False))
    result = train("supervised", config)
    metrics = pd.read_csv(result.metrics_file)
    first, last = metrics.loss.head(6).mean(), metrics.loss.tail(6).mean()
    assert last < 0.7 * first, (first, last)
    assert result.merged_dir is None and not (out / "model.safetensors").exists()
    encoder = LLM2Vec.from_pretrained(str(out / "adapter"))
    assert encoder.pooling_mode == "mean" and encoder.max_length == 512  # its own length, not the training one


@pytest.mark.parametrize("stage", ["simcse", "supervised"])
def test_missing_data_fails_before_loading_the_model(stage, tmp_path):
    from l2v_core.training import DataError

    config = load_config(stage, None, dict(base_model=str(tmp_path / "no-model"), train_file=str(tmp_path / "none.jsonl"),
                                           output_dir=str(tmp_path / "o")))
    with pytest.raises(DataError, match="Training data file not found"):
        train(stage, config)


def test_tiny_corpus_smaller_than_a_batch_is_refused(tiny_llama, tmp_path):
    from l2v_core.training import DataError

    data = tmp_path / "few.txt"
    data.write_text("\n".join(tiny.CORPUS[:3]))
    config = load_config("simcse", None, dict(base_model=str(tiny_llama), train_file=str(data),
                                              output_dir=str(tmp_path / "o"), batch_size=8))
    with pytest.raises(DataError, match="fewer than 8 items"):
        train("simcse", config)


def test_bf16_checkpointing_and_accumulation(tiny_llama, tmp_path):
    config = load_config("simcse", None, dict(
        base_model=str(tiny_llama), train_file=sample_path("fortunes.txt"), output_dir=str(tmp_path / "run"),
        max_steps=2, batch_size=4, max_length=16, gradient_accumulation_steps=2, bf16=True,
        gradient_checkpointing=True, save_steps=0, merge_output=False, progress_bar=False))
    assert load_encoder(config).model.get_base_model().is_activation_checkpointing
    result = train("simcse", config)
    metrics = pd.read_csv(result.metrics_file)
    assert metrics.step.tolist() == [1, 2] and metrics.loss.map(math.isfinite).all()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_simcse_views_share_one_forward_pass_with_the_loss_of_two(tiny_llama):
    """SimCSE's two columns are the same texts: one merged forward of 2B rows gives, without dropout, exactly
    the loss of one forward per column."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from l2v_core.st_modules import LLM2VecModule
    from l2v_core.training.contrastive import OnePassViewsLoss

    model = SentenceTransformer(modules=[LLM2VecModule(LLM2Vec.from_pretrained(str(tiny_llama), dtype="float32"))])
    model.eval()
    calls = []
    model[0].register_forward_hook(lambda module, args, out: calls.append(out["sentence_embedding"].shape[0]))
    texts = TEXTS[:3]
    features = lambda: [model[0].preprocess(texts), model[0].preprocess(texts)]  # noqa: E731
    with torch.no_grad():
        merged = OnePassViewsLoss(model, scale=20.0)(features(), None)
        assert calls == [2 * len(texts)]
        separate = MultipleNegativesRankingLoss(model, scale=20.0)(features(), None)
    assert calls[1:] == [len(texts), len(texts)]
    torch.testing.assert_close(merged, separate, rtol=1e-5, atol=1e-5)
