"""Training the frozen-encoder head, temperature scaling, and grouped cross-validation.

The encoder is frozen, so features are computed once and the head trains on them in seconds.
Imbalance: class-weighted cross-entropy (inverse square-root frequency) and real items up-weighted
against the written synthetic ones.

The review signal ("the therapist reviews homework assigned earlier") is a second output of the same
head (``JointHead``): one logit read from the head's hidden layer, trained with a binary loss on the
items that carry a ``review`` annotation only (``masked_bce``); the 5-class output is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from homework_monitor.model import Head


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 256
    dropout: float = 0.2
    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    real_weight: float = 2.0  # real transcripts count more than the written synthetic set
    seed: int = 13


class JointHead(nn.Module):
    """The 5-class ``Head`` (``.cls``, saved and served as before) plus a review logit (``.review``)
    computed from the class head's hidden layer, so both outputs share the pooled features."""

    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float):
        super().__init__()
        self.cls = Head(in_dim, hidden, n_classes, dropout)
        self.review = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drop_in, hidden_layer, act, drop_out, out = self.cls.net
        h = act(hidden_layer(drop_in(x)))
        return out(drop_out(h)), self.review(h).squeeze(-1)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Mean binary cross-entropy over the items whose ``target`` is not NaN (NaN = not annotated);
    0 (with a gradient of 0) when no item in the batch is annotated."""
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(
        logits[mask], target[mask], pos_weight=torch.tensor(pos_weight, device=logits.device))


def review_pos_weight(target: np.ndarray) -> float:
    """sqrt(negatives / positives) among annotated items: the rare review class counts more, not fully."""
    t = target[~np.isnan(target)]
    pos = float((t > 0.5).sum())
    return float(np.sqrt(max(len(t) - pos, 1.0) / max(pos, 1.0)))


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64) + 1.0
    w = 1.0 / np.sqrt(counts)
    return torch.tensor(w / w.mean() , dtype=torch.float32)


def train_joint_head(X: np.ndarray, y: np.ndarray, review: np.ndarray, n_classes: int, cfg: HeadConfig,
                     sample_weight: np.ndarray | None = None, review_weight: float = 1.0) -> JointHead:
    """``train_head`` with the review output: ``review`` holds 0/1 per item, NaN where not annotated."""
    torch.manual_seed(cfg.seed)
    head = JointHead(X.shape[1], cfg.hidden, n_classes, cfg.dropout)
    pos_weight = review_pos_weight(review)
    rt = torch.from_numpy(review.astype(np.float32))
    return _fit(head, X, y, n_classes, cfg, sample_weight,
                lambda rev, idx: review_weight * masked_bce(rev, rt[idx], pos_weight))


@torch.inference_mode()
def joint_head_logits(head: JointHead, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, rev = head(torch.from_numpy(X.astype(np.float32)))
    return logits.numpy(), rev.numpy()


def train_head(X: np.ndarray, y: np.ndarray, n_classes: int, cfg: HeadConfig,
               sample_weight: np.ndarray | None = None) -> Head:
    torch.manual_seed(cfg.seed)
    return _fit(Head(X.shape[1], cfg.hidden, n_classes, cfg.dropout), X, y, n_classes, cfg, sample_weight)


def _fit(head, X: np.ndarray, y: np.ndarray, n_classes: int, cfg: HeadConfig, sample_weight: np.ndarray | None,
         review_loss=None):
    """Class-weighted cross-entropy per item times its sample weight, plus ``review_loss(review_logits,
    idx)`` for a head that also outputs the review logit."""
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y, n_classes), reduction="none")
    yt = torch.from_numpy(y.astype(np.int64))
    return fit_loop(head, X, cfg, sample_weight, lambda logits, idx: loss_fn(logits, yt[idx]), review_loss)


def fit_loop(head, X: np.ndarray, cfg, sample_weight: np.ndarray | None, item_loss, extra_loss=None):
    """The heads' training loop (AdamW, shuffled mini-batches, ``cfg``'s epochs, batch size, lr, weight
    decay and seed): per batch, ``item_loss(logits, idx)`` (one value per item) averaged with the items'
    sample weights, plus ``extra_loss(second_output, idx)`` for a head with a second output."""
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    Xt = torch.from_numpy(X.astype(np.float32))
    sw = torch.from_numpy((sample_weight if sample_weight is not None else np.ones(len(X))).astype(np.float32))
    head.train()
    for _ in range(cfg.epochs):
        perm = rng.permutation(len(X))
        for i in range(0, len(X), cfg.batch_size):
            idx = torch.from_numpy(perm[i:i + cfg.batch_size])
            out = head(Xt[idx])
            logits = out[0] if extra_loss is not None else out
            loss = (item_loss(logits, idx) * sw[idx]).sum() / sw[idx].sum()
            if extra_loss is not None:
                loss = loss + extra_loss(out[1], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    return head


@torch.inference_mode()
def head_logits(head: Head, X: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(X.astype(np.float32))).numpy()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature that minimises held-out NLL (grid + refinement; one scalar, robust)."""
    def nll(t: float) -> float:
        p = softmax(logits, t)
        return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = min(grid, key=nll)
    fine = np.linspace(best * 0.9, best * 1.1, 21)
    return float(min(fine, key=nll))


def fit_temperature_to(logits: np.ndarray, target: np.ndarray) -> float:
    """Temperature whose probabilities come closest (cross-entropy) to another model's probabilities
    ``target`` on the same items: a student put on its teacher's scale, so thresholds chosen for the
    teacher keep their meaning."""
    def ce(t: float) -> float:
        return float(-(target * np.log(softmax(logits, t) + 1e-12)).sum(1).mean())
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = min(grid, key=ce)
    fine = np.linspace(best * 0.9, best * 1.1, 21)
    return float(min(fine, key=ce))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    ece, edges = 0.0, np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(ece)
