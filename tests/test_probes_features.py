"""Word vectors from sub-tokens, layer specs, chunking of long sentences, and run_probe_task with its cache."""
import re
import warnings

import numpy as np
import pytest
import torch

from l2v_eval.probes import PROBE_TASK_NAMES, bundled_data_dir, read_conll, run_probe_task
from l2v_eval.probes.features import extract_word_features, parse_layers, plan_pieces, resolve_model
from tests import tiny

SENTENCES = [
    ["Paris", "is", "the", "capital", "of", "Franceland", "."],
    ["Cats", "sleep", "."],
    ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "near", "Zurich", "!"],
    ["Hello"],
]


@pytest.fixture(scope="module")
def causal(tiny_llama):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    from l2v_core import LLM2Vec

    return LLM2Vec.from_pretrained(str(tiny_llama))  # bidirectional, tokenizer pads on the left


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3, 4]
    assert parse_layers(None, 2) == [0, 1, 2]
    assert parse_layers("last", 4) == [4]
    assert parse_layers("0, 2,-1", 4) == [0, 2, 4]
    assert parse_layers([3, 3, 1], 4) == [1, 3]
    with pytest.raises(ValueError, match=r"Layer 5 is out of range: this model has layers 0 \(embeddings\) to 4"):
        parse_layers("0,5", 4)
    with pytest.raises(ValueError, match="Bad layers spec 'middle'"):
        parse_layers("middle", 4)


def _piece_text(tokenizer, ids, positions):
    return "".join(tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(ids[t])]) for t in positions)


def metaspace_tokenizer():
    """A SentencePiece-style BPE (Llama-2 / Mistral): '▁' marks a word start, lone '▁' pieces occur."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(tiny.CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("kind", ["byte-level", "metaspace"])
def test_words_align_to_their_sub_tokens(kind):
    # Byte-level BPE: words after the first get a space-prefixed piece ('Ġis'); SentencePiece style: '▁is'.
    tokenizer = tiny.make_tokenizer() if kind == "byte-level" else metaspace_tokenizer()
    words = SENTENCES[0]
    by_pooling = {p: plan_pieces(tokenizer, [words], max_length=64, pooling=p)[0] for p in ("first", "last", "mean")}
    piece = by_pooling["mean"]
    assert piece.input_ids[0] == tokenizer.bos_token_id  # special tokens stay, but feed no word
    assert len(piece.input_ids) > len(words) + 2  # the tokenizer really splits words into pieces
    for j, word in enumerate(words):
        positions = [t for t, w in piece.token_words if w == j]
        assert _piece_text(tokenizer, piece.input_ids, positions).strip() == word
        (first,) = [t for t, w in by_pooling["first"].token_words if w == j]
        (last,) = [t for t, w in by_pooling["last"].token_words if w == j]
        assert (first, last) == (positions[0], positions[-1])
    assert len([t for t, w in piece.token_words if w == 5]) > 1  # "Franceland" spans several sub-tokens


def _reference(model, tokenizer, words, layers, pooling="first"):
    """Word vectors from an unpadded forward pass of one sentence."""
    piece = plan_pieces(tokenizer, [words], max_length=512, pooling=pooling)[0]
    with torch.no_grad():
        states = model(input_ids=torch.tensor([piece.input_ids]), output_hidden_states=True).hidden_states
    out = np.zeros((len(layers), len(words), states[0].shape[-1]), dtype=np.float32)
    for j in range(len(words)):
        positions = [t for t, w in piece.token_words if w == j]
        for i, layer in enumerate(layers):
            out[i, j] = states[layer][0, positions].mean(0).numpy()
    return out


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_batched_padded_extraction_matches_single_sentences(causal, encoder, pooling):
    for model, tokenizer in (causal, (encoder.model, encoder.tokenizer)):
        features = extract_word_features(model, tokenizer, SENTENCES, [0, 1, 2], pooling=pooling, batch_size=3,
                                         max_length=512, device="cpu")
        assert features.shape == (3, sum(map(len, SENTENCES)), 32)
        expected = np.concatenate([_reference(model, tokenizer, words, [0, 1, 2], pooling) for words in SENTENCES],
                                  axis=1)
        np.testing.assert_allclose(features, expected, atol=2e-4, rtol=1e-4)
    assert tokenizer.padding_side == "left"  # the encoder's own setting is left alone


def test_bidirectional_and_causal_features_differ(causal, encoder):
    causal_features = extract_word_features(*causal, SENTENCES[:1], [1], device="cpu")
    bidirectional = extract_word_features(encoder.model, encoder.tokenizer, SENTENCES[:1], [1], device="cpu")
    # Same weights; after one layer only the last token has seen the same context under both attentions.
    assert not np.allclose(causal_features[0, 0], bidirectional[0, 0], atol=1e-3)
    np.testing.assert_allclose(causal_features[0, -1], bidirectional[0, -1], atol=2e-4)


def test_long_sentences_are_chunked_with_one_warning(causal):
    model, tokenizer = causal
    long = SENTENCES[2]
    with pytest.warns(UserWarning, match=r"2 sentence\(s\) longer than max_length=10 tokens were split") as caught:
        pieces = plan_pieces(tokenizer, [long, SENTENCES[1], long], max_length=10)
    assert len([w for w in caught if "max_length" in str(w.message)]) == 1
    first_chunks = [p for p in pieces if p.sentence == 0]
    assert len(first_chunks) > 1 and all(len(p.input_ids) <= 10 for p in pieces)
    covered = [p.first_word + j for p in first_chunks for _, j in p.token_words]
    assert covered == list(range(len(long)))  # every word once, in order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = extract_word_features(model, tokenizer, [long], [1], max_length=10, device="cpu")
    chunk = first_chunks[1]
    n = len(chunk.token_words)
    alone = extract_word_features(model, tokenizer, [long[chunk.first_word:chunk.first_word + n]], [1], device="cpu")
    np.testing.assert_allclose(features[0, chunk.first_word:chunk.first_word + n], alone[0], atol=2e-4)


def test_resolve_model_variants(tiny_llama, causal, encoder):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert resolve_model((lm, causal[1]))[0] is lm.model  # the LM head is not needed
    assert resolve_model(encoder) == (encoder.model, encoder.tokenizer)
    with pytest.raises(TypeError, match="Cannot get a model and tokenizer from str"):
        resolve_model("tiny")


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_run_probe_task_rows_and_cache_reuse(encoder, tmp_path):
    counter = ForwardCounter(encoder.model)
    common = dict(encoder=encoder, model_name="tiny-llama", model_revision="r1", data_dir=None, layers="all",
                  batch_size=16, cache_dir=tmp_path, seed=0, device="cpu")
    try:
        rows = run_probe_task("probe-pos", **common)
        assert counter.calls > 0
        assert sorted(r["layer"] for r in rows) == [0, 1, 2]
        for row in rows:
            assert set(row) == {"model", "model_revision", "task", "task_type", "split", "subset", "languages",
                                "metric", "value", "is_main_score", "n_samples", "eval_seconds", "layer",
                                "ci_low", "ci_high", "ci_resamples", "ci_seed"}
            # a bootstrap over the test sentences; 172 words in a few sentences leave it wide
            assert row["ci_low"] < row["value"] < row["ci_high"] and row["ci_high"] - row["ci_low"] > 0.02
            assert (row["ci_resamples"], row["ci_seed"]) == (1000, 0)
            assert (row["model"], row["model_revision"], row["task"], row["task_type"]) == \
                ("tiny-llama", "r1", "probe-pos", "WordProbe")
            assert (row["split"], row["subset"], row["languages"], row["metric"]) == \
                ("test", "default", "eng", "accuracy")
            assert row["is_main_score"] and row["n_samples"] == 172 and 0.0 <= row["value"] <= 1.0
            assert row["eval_seconds"] > 0
        test_tags = [t for s in read_conll(bundled_data_dir() / "test.txt") for t in s.tags["pos"]]
        majority = max(map(test_tags.count, set(test_tags))) / len(test_tags)
        assert max(r["value"] for r in rows) > majority + 0.15  # even a random tiny model's words carry their tags
        entries = list((tmp_path / "word-features" / "tiny-llama").iterdir())
        assert len(entries) == 3  # one per data file: train, dev, test
        assert all(sorted(p.name for p in e.iterdir()) == ["features.npy", "meta.json"] for e in entries)

        counter.calls = 0
        ner = run_probe_task("probe-ner", **common)  # same files, same model: every layer from the cache
        chunk = run_probe_task("probe-chunk", **{**common, "layers": "last"})
        assert counter.calls == 0
        assert [(r["layer"], r["metric"], r["is_main_score"]) for r in ner] == [(k, "f1", True) for k in range(3)]
        assert [(r["metric"], r["is_main_score"]) for r in chunk] == [("f1", True), ("accuracy", False)]
        assert "ci_low" in chunk[0] and "ci_low" not in chunk[1]  # the main score's interval only
        again = run_probe_task("probe-pos", **common)
        assert counter.calls == 0
        untimed = lambda rs: [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rs]  # noqa: E731
        assert untimed(again) == untimed(rows)  # deterministic with a seed

        run_probe_task("probe-pos", **{**common, "layers": "last", "pooling": "mean"})  # another key: recomputed
        assert counter.calls > 0
    finally:
        counter.handle.remove()


def test_run_probe_task_without_cache_dir_and_bad_task(causal):
    rows = run_probe_task("probe-chunk", encoder=causal, model_name="tiny", model_revision=None, data_dir=None,
                          layers="1", batch_size=8, cache_dir=None, seed=0, device="cpu")
    assert [(r["layer"], r["metric"]) for r in rows] == [(1, "f1"), (1, "accuracy")]
    message = f"Unknown probe task 'probe-x'; expected one of {PROBE_TASK_NAMES}"
    with pytest.raises(ValueError, match=re.escape(message)):
        run_probe_task("probe-x", encoder=causal, model_name="tiny", model_revision=None, data_dir=None,
                       layers="all", batch_size=8, cache_dir=None, seed=0)


@pytest.mark.slow
def test_real_model_words_carry_their_tags(smollm2_gguf, tmp_path):
    """SmolLM2-135M's middle-layer word vectors give far-above-baseline POS and NER probes on the sample."""
    from l2v_core import LLM2Vec

    encoder = LLM2Vec.from_pretrained(smollm2_gguf, enable_bidirectional=False)
    common = dict(encoder=encoder, model_name="smollm2-135m", model_revision="gguf-q4_1", data_dir=None,
                  layers="8", batch_size=16, cache_dir=tmp_path, seed=0, device="cpu")
    (pos,) = run_probe_task("probe-pos", **common)
    (ner,) = run_probe_task("probe-ner", **common)
    # Measured: POS ~0.87, NER F1 ~0.5. Baselines: majority tag 0.24 (NNP); a random tiny model's NER F1 ~0.05.
    assert pos["value"] > 0.75, pos
    assert ner["value"] > 0.3, ner


def test_out_of_memory_splits_the_batch_and_loses_no_word(encoder, monkeypatch):
    model, tokenizer = encoder.model, encoder.tokenizer
    expected = extract_word_features(model, tokenizer, SENTENCES, [1, 2], batch_size=4, device="cpu")
    real_forward, rows = model.forward, []

    def forward_failing_once(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        if len(rows) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward_failing_once)
    with pytest.warns(UserWarning, match="out of memory"):
        got = extract_word_features(model, tokenizer, SENTENCES, [1, 2], batch_size=4, device="cpu")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert rows == [4, 2, 2]  # the failed batch ran again as two halves
