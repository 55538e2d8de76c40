"""A linear probe (softmax regression) and the tagging metrics it is scored with.

The probe is deliberately weak: a single linear map from a frozen word vector
to label logits, so the score measures what the representation makes linearly
available rather than what a classifier could learn on top of it.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from l2v_core.errors import check_positive_int

Span = tuple[str, int, int]  # (type, start, end) with end exclusive


# ---------------------------------------------------------------------- metrics
def extract_spans(tags: Sequence[str], scheme: str = "IOB2", strict: bool = False) -> set[Span]:
    """Typed spans of one IOB-tagged sentence.

    The default follows conlleval (and seqeval's default mode): a span starts at
    ``B-X``, or at ``I-X`` when the previous tag is not of type X, and runs while
    ``I-X`` follows. That reads IOB1 (where ``B-`` only separates two adjacent
    spans of one type) and IOB2 alike. ``strict=True`` applies IOB2 strictly,
    as seqeval's strict mode: a span must open with ``B-X``; an ``I-X`` that does not
    continue an open span of type X belongs to no span.
    """
    if scheme not in ("IOB1", "IOB2"):
        raise ValueError(f"Unknown tagging scheme {scheme!r}; expected 'IOB1' or 'IOB2'")
    if strict and scheme != "IOB2":
        raise ValueError("strict span extraction is defined for IOB2 only")
    spans: set[Span] = set()
    open_type: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        if tag == "O":
            prefix, kind = "O", None
        elif len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
            prefix, kind = tag[0], tag[2:]
        else:
            raise ValueError(f"Tag {tag!r} at position {i} is not IOB ('O', 'B-X' or 'I-X')")
        continues = prefix == "I" and open_type == kind
        if open_type is not None and not continues:
            spans.add((open_type, start, i))
            open_type = None
        if prefix == "B" or (prefix == "I" and not continues and not strict):
            open_type, start = kind, i
    if open_type is not None:
        spans.add((open_type, start, len(tags)))
    return spans


def span_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str = "IOB2",
            strict: bool = False) -> dict[str, float]:
    """Micro precision, recall and F1 over exact typed spans of all sentences (0 when undefined)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    n_gold = n_pred = n_correct = 0
    for k, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"Sentence {k}: {len(g)} gold tags but {len(p)} predicted")
        gold_spans = extract_spans(g, scheme, strict)
        pred_spans = extract_spans(p, scheme, strict)
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
        n_correct += len(gold_spans & pred_spans)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def accuracy(gold: Sequence[str] | np.ndarray, predicted: Sequence[str] | np.ndarray) -> float:
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    if gold.shape != predicted.shape:
        raise ValueError(f"{gold.shape} gold labels but {predicted.shape} predicted")
    return float((gold == predicted).mean()) if gold.size else 0.0


# ---------------------------------------------------------------------- probe
@dataclass
class ProbeConfig:
    """Training settings.

    The defaults come from a small grid (lr, weight decay, batch size, patience) run on SmolLM2-135M
    features of the bundled sample; the settings tried there differed by less than the sample's noise.
    """

    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 10
    """Epochs without a better dev score before training stops (the best epoch's weights are kept)."""
    min_epochs: int = 10
    """Epochs always run: on small data the dev score often dips before it climbs."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "patience", "min_epochs"):
            check_positive_int(f"ProbeConfig.{name}", getattr(self, name))
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"ProbeConfig needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


@dataclass
class LinearProbe:
    """Standardisation (train mean/std) followed by one linear layer; predicts label indices."""

    mean: torch.Tensor
    scale: torch.Tensor
    linear: torch.nn.Linear
    best_epoch: int
    epochs: int
    dev_score: float

    @torch.no_grad()
    def logits(self, x: np.ndarray | torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
        device = self.linear.weight.device
        x = torch.as_tensor(x)
        out = [self.linear((x[i:i + batch_size].to(device, torch.float32) - self.mean) / self.scale).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.linear.out_features)

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.logits(x).argmax(dim=1).numpy()


def _check_xy(name: str, x, y, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{name}: expected features (n, d) and labels (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError(f"{name}: no examples")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or infinite values")
    if y.numel() and (int(y.max()) >= n_classes or int(y.min()) < -1):
        raise ValueError(f"{name}: labels must lie in [0, {n_classes}) (or -1 for a label unseen in training)")
    return x, y


def train_linear_probe(x_train, y_train, x_dev, y_dev, n_classes: int, *,
                       dev_score: Callable[[np.ndarray], float] | None = None,
                       config: ProbeConfig | None = None, seed: int = 0,
                       device: str | torch.device | None = None) -> LinearProbe:
    """Fit softmax regression with minibatch Adam, early-stopped on the dev split.

    ``y_train`` holds label indices in ``[0, n_classes)``; ``y_dev`` may hold -1 for labels
    never seen in training (always counted wrong). ``dev_score(predicted_indices)`` returns the
    number to maximise (default: dev accuracy). Same seed, data and device give the same probe.
    """
    config = config or ProbeConfig()
    if n_classes < 2:
        raise ValueError(f"A probe needs at least 2 classes, got {n_classes}")
    x_train, y_train = _check_xy("train", x_train, y_train, n_classes)
    x_dev, y_dev = _check_xy("dev", x_dev, y_dev, n_classes)
    if (y_train < 0).any():
        raise ValueError("train: every training label needs an index in [0, n_classes)")
    if x_dev.shape[1] != x_train.shape[1]:
        raise ValueError(f"train features have {x_train.shape[1]} dims but dev features {x_dev.shape[1]}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev_score is None:
        y_dev_np = y_dev.numpy()
        dev_score = lambda predicted: float((predicted == y_dev_np).mean())  # noqa: E731

    x_train, y_train, x_dev = x_train.to(device), y_train.to(device), x_dev.to(device)
    mean = x_train.mean(dim=0)
    # Hidden states of LLMs have a few huge-magnitude dimensions; without scaling they dominate
    # the gradient. The floor keeps constant dimensions (std 0) finite.
    scale = x_train.std(dim=0, unbiased=False).clamp_min(1e-6)
    x_train = (x_train - mean) / scale

    generator = torch.Generator(device="cpu").manual_seed(seed)
    linear = torch.nn.Linear(x_train.shape[1], n_classes).to(device)
    with torch.no_grad():  # the problem is convex: zeros are a fine, seed-free start
        linear.weight.zero_()
        linear.bias.zero_()
    optimizer = torch.optim.Adam(linear.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    probe = LinearProbe(mean, scale, linear, best_epoch=0, epochs=0, dev_score=float("-inf"))
    best_state = copy.deepcopy(linear.state_dict())
    n = len(x_train)
    for epoch in range(1, config.max_epochs + 1):
        linear.train()
        order = torch.randperm(n, generator=generator).to(device)
        for i in range(0, n, config.batch_size):
            batch = order[i:i + config.batch_size]
            loss = torch.nn.functional.cross_entropy(linear(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        linear.eval()
        score = dev_score(probe.predict(x_dev))
        probe.epochs = epoch
        if score > probe.dev_score:
            probe.dev_score, probe.best_epoch = score, epoch
            best_state = copy.deepcopy(linear.state_dict())
        elif epoch >= config.min_epochs and epoch - probe.best_epoch >= config.patience:
            break
    linear.load_state_dict(best_state)
    return probe
