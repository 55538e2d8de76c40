"""Span extraction, span F1 and the linear probe on synthetic data."""
import numpy as np
import pytest

from l2v_eval.probes.linear import ProbeConfig, accuracy, extract_spans, span_f1, train_linear_probe


def test_spans_iob2():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    assert extract_spans(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6), ("ORG", 7, 8)}


def test_spans_type_change_and_stray_inside_tag():
    # conlleval: an I- tag that does not continue its type opens a span; strict IOB2 drops it.
    tags = ["O", "I-MISC", "I-MISC", "B-PER", "I-LOC", "O"]
    assert extract_spans(tags) == {("MISC", 1, 3), ("PER", 3, 4), ("LOC", 4, 5)}
    assert extract_spans(tags, strict=True) == {("PER", 3, 4)}


def test_spans_iob1():
    # IOB1 (original CoNLL-2003): B- only separates two adjacent spans of one type.
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"]
    assert extract_spans(tags, scheme="IOB1") == {("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5), ("ORG", 5, 7)}
    with pytest.raises(ValueError, match="strict span extraction is defined for IOB2 only"):
        extract_spans(tags, scheme="IOB1", strict=True)


def test_spans_reject_non_iob():
    with pytest.raises(ValueError, match="Tag 'PER' at position 1 is not IOB"):
        extract_spans(["O", "PER"])
    with pytest.raises(ValueError, match="Unknown tagging scheme 'BIOES'"):
        extract_spans(["O"], scheme="BIOES")


def test_span_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-MISC"]]
    # gold spans: PER, LOC, ORG (3); predicted: PER, ORG, ORG, MISC (4); correct: PER, ORG (2)
    scores = span_f1(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert span_f1(gold, gold)["f1"] == 1.0
    assert span_f1([["O", "O"]], [["O", "O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="Sentence 1: 2 gold tags but 1 predicted"):
        span_f1(gold, [pred[0], ["B-ORG"]])


def test_accuracy():
    assert accuracy(["a", "b", "c", "d"], ["a", "b", "x", "d"]) == 0.75


def synthetic(seed, n, d=32, classes=5):
    """Each label has its own direction in feature space plus noise: linearly recoverable."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(classes, d)) * 1.5
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, d))
    x[:, 0] = x[:, 0] * 100 + 50  # one huge off-centre dimension, as LLM hidden states have
    return x.astype(np.float32), y


def test_probe_recovers_linear_labels():
    (xtr, ytr), (xdev, ydev), (xte, yte) = synthetic(1, 2000), synthetic(2, 300), synthetic(3, 500)
    probe = train_linear_probe(xtr, ytr, xdev, ydev, 5, seed=0, device="cpu")
    assert accuracy(yte, probe.predict(xte)) > 0.98
    assert probe.dev_score > 0.98 and 1 <= probe.best_epoch <= probe.epochs


def test_probe_on_shuffled_labels_stays_near_chance():
    (xtr, ytr), (xdev, ydev), (xte, yte) = synthetic(1, 2000), synthetic(2, 300), synthetic(3, 2000)
    rng = np.random.default_rng(7)
    probe = train_linear_probe(xtr, rng.permutation(ytr), xdev, rng.permutation(ydev), 5, seed=0, device="cpu")
    majority = np.bincount(yte).max() / len(yte)
    assert accuracy(rng.permutation(yte), probe.predict(xte)) < majority + 0.06


def test_probe_is_deterministic_and_uses_dev_score():
    (xtr, ytr), (xdev, ydev) = synthetic(1, 500), synthetic(2, 100)
    config = ProbeConfig(max_epochs=15, patience=3, min_epochs=1)
    a = train_linear_probe(xtr, ytr, xdev, ydev, 5, seed=3, config=config, device="cpu")
    b = train_linear_probe(xtr, ytr, xdev, ydev, 5, seed=3, config=config, device="cpu")
    assert np.array_equal(a.linear.weight.detach().numpy(), b.linear.weight.detach().numpy())
    calls = []
    # A dev score that only gets worse: the first epoch is kept and training stops after `patience`.
    train_linear_probe(xtr, ytr, xdev, ydev, 5, seed=3, config=config, device="cpu",
                       dev_score=lambda predicted: -float(len(calls.append(1) or calls)))
    assert len(calls) == 1 + config.patience


def test_probe_input_validation():
    x, y = synthetic(1, 50)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        train_linear_probe(x, y, x, y, 3, device="cpu")
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_linear_probe(x, y * 0, x, y * 0, 1, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        train_linear_probe(np.full_like(x, np.nan), y, x, y, 5, device="cpu")
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        ProbeConfig(patience=0)


def test_probe_intervals_pool_tokens_and_spans_over_resampled_sentences():
    """The interval's unit metric on all sentences is the probe's own score (token accuracy, span F1), and a
    resample that draws one sentence twice counts its tokens and spans twice."""
    from l2v_eval.probes.tasks import _interval, _score
    from l2v_eval import unit_metrics as um

    gold = [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-ORG", "O", "O", "B-PER"]]
    predicted = [["B-PER", "I-PER", "O"], ["O", "O"], ["B-ORG", "O", "B-LOC", "B-PER"]]
    for metric in ("accuracy", "f1"):
        row = _interval(metric, gold, predicted)
        assert row["ci_low"] <= _score(metric, gold, predicted) <= row["ci_high"]
    accuracy = um.ratio([3, 1, 3], [3, 2, 4])
    index = np.array([[0, 1, 2], [1, 1, 2]])
    assert accuracy(index) == pytest.approx([7 / 9, 5 / 8])
    assert _score("accuracy", gold, predicted) == pytest.approx(7 / 9)
    twice = [gold[1], gold[1], gold[2]], [predicted[1], predicted[1], predicted[2]]
    assert _score("f1", *twice) == pytest.approx(span_f1(*twice)["f1"])
    spans = um.ratio([0, 0, 4], [1, 1, 5])  # per sentence: 2 x correct, predicted + gold spans
    assert spans(np.array([[1, 1, 2]]))[0] == pytest.approx(_score("f1", *twice))
