"""The frozen-encoder head: encoder weights never move, temperature scaling, calibration error."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from homework_monitor.model import Encoder, Example, Head, base_encoder_path, featurize
from homework_monitor.training.features import cached_features
from homework_monitor.training.head import (
    HeadConfig,
    class_weights,
    expected_calibration_error,
    fit_temperature,
    head_logits,
    softmax,
    train_head,
)

# Written for these tests: two obvious groups (homework-like vs. small talk) and labels.
EXAMPLES = [
    Example("Please write in your journal every evening this week.", "Okay, I will.",
            (("client", "I had a rough week."),)),
    Example("Each morning, practice the slow breathing for five minutes.", "Sure."),
    Example("Before next time, call your sister and set a date.", "I can do that."),
    Example("Read the handout on sleep and bring questions.", None),
    Example("How was the drive here today?", "Traffic was fine."),
    Example("That sounds really hard.", "It was."),
    Example("Tell me more about your weekend.", "We went hiking."),
    Example("What did you have for lunch?", "A sandwich.", (("therapist", "Hi."), ("client", "Hello."))),
]
LABELS = np.array([2, 0, 1, 3, 4, 4, 4, 4])


def _hash_state(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def encoder():
    return Encoder(base_encoder_path(), "mean", 64)


def test_frozen_encoder_weights_do_not_change_during_head_training(encoder):
    before = _hash_state(encoder.model)
    X = featurize(encoder, EXAMPLES, ("pair", "therapist"), batch_size=3)
    assert X.shape == (len(EXAMPLES), 2 * 384) and X.dtype == np.float32 and np.isfinite(X).all()
    cfg = HeadConfig(hidden=32, epochs=15, batch_size=4, lr=1e-2)
    torch.manual_seed(cfg.seed)
    init = Head(X.shape[1], cfg.hidden, 5, cfg.dropout)  # what train_head starts from (same seed)
    w = np.where(LABELS == 4, 1.0, cfg.real_weight)
    head = train_head(X, LABELS, 5, cfg, w)
    assert _hash_state(encoder.model) == before  # the encoder is frozen
    assert not any(p.requires_grad and p.grad is not None for p in encoder.model.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(init.state_dict().values(), head.state_dict().values())]
    assert all(changed)  # every head tensor trained
    assert not head.training  # returned in eval mode (dropout off)
    logits = head_logits(head, X)
    assert logits.shape == (len(EXAMPLES), 5)
    assert (logits.argmax(1) == LABELS).mean() >= 0.75  # it fits its own training set
    # the same features again: embedding is deterministic and still unchanged weights
    np.testing.assert_allclose(featurize(encoder, EXAMPLES, ("pair", "therapist"), batch_size=8), X,
                               rtol=1e-4, atol=1e-5)
    assert _hash_state(encoder.model) == before


def test_train_head_is_seeded(encoder):
    X = featurize(encoder, EXAMPLES[:4], ("therapist",))
    y = LABELS[:4]
    cfg = HeadConfig(hidden=8, epochs=3, batch_size=2)
    a, b = train_head(X, y, 5, cfg), train_head(X, y, 5, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_cached_features_match_featurize_and_hit_the_cache(encoder, tmp_path):
    views = ("pair", "context")
    X = cached_features(encoder, "t", EXAMPLES, views, tmp_path)
    np.testing.assert_allclose(X, featurize(encoder, EXAMPLES, views), rtol=1e-4, atol=1e-5)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 2  # one per view
    for f in files:  # a second call reads the cache: poison it and see the poison come back
        np.save(f, np.full_like(np.load(f), 7.0))
    assert (cached_features(encoder, "t", EXAMPLES, views, tmp_path) == 7.0).all()
    # a different tag or text is a different key
    assert not (cached_features(encoder, "u", EXAMPLES[:2], views, tmp_path) == 7.0).any()


# --- class weights --------------------------------------------------------------------------------
def test_class_weights_inverse_sqrt_frequency():
    w = class_weights(np.array([0, 0, 0, 1]), 3).numpy()
    raw = 1 / np.sqrt(np.array([4.0, 2.0, 1.0]))  # counts + 1
    np.testing.assert_allclose(w, raw / raw.mean(), rtol=1e-6)
    assert w.mean() == pytest.approx(1.0) and w[2] > w[1] > w[0]


# --- softmax / temperature -------------------------------------------------------------------------
def _nll(logits, y, t=1.0):
    p = softmax(logits, t)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def test_softmax_rows_sum_to_one_and_shift_invariant():
    z = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    p = softmax(z)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(softmax(z + 5.0), p)
    np.testing.assert_allclose(softmax(np.zeros((1, 4))), [[0.25] * 4])
    assert softmax(z[1:], 100.0).max() < p[1].max()  # higher temperature flattens


def _calibrated_logits(n=4000, scale=1.0, seed=0):
    """Labels drawn from softmax(logits): these logits are calibrated at T=1; ``scale`` distorts them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, 5))
    p = softmax(logits)
    y = np.array([rng.choice(5, p=row) for row in p])
    return logits * scale, y


def test_fit_temperature_on_overconfident_logits():
    logits, y = _calibrated_logits(scale=3.0)  # three times too sharp
    T = fit_temperature(logits, y)
    assert T > 1.0
    assert T == pytest.approx(3.0, rel=0.15)
    assert _nll(logits, y, T) < _nll(logits, y) - 0.1
    ece_before = expected_calibration_error(softmax(logits), y)
    ece_after = expected_calibration_error(softmax(logits, T), y)
    assert ece_after < ece_before and ece_after < 0.05


def test_fit_temperature_on_underconfident_and_calibrated_logits():
    logits, y = _calibrated_logits(scale=0.5, seed=1)
    T = fit_temperature(logits, y)
    assert T < 1.0 and _nll(logits, y, T) < _nll(logits, y)
    logits, y = _calibrated_logits(seed=2)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.15)


def test_fit_temperature_hand_made_overconfident():
    # confident (margin 8) and right only 3 times out of 5
    logits = np.array([[8.0, 0, 0, 0, 0]] * 5)
    y = np.array([0, 0, 0, 1, 2])
    T = fit_temperature(logits, y)
    assert T > 1.0 and _nll(logits, y, T) < _nll(logits, y)
    # the best possible confidence is the accuracy, 0.6
    assert softmax(logits, T)[0, 0] == pytest.approx(0.6, abs=0.03)


# --- expected calibration error -------------------------------------------------------------------
def test_ece_exact_values():
    y = np.array([0, 0, 0, 0, 0])
    sure_right = np.tile([1.0, 0, 0, 0, 0], (5, 1))
    assert expected_calibration_error(sure_right, y) == pytest.approx(0.0)
    sure_wrong = np.tile([0.0, 1.0, 0, 0, 0], (5, 1))
    assert expected_calibration_error(sure_wrong, y) == pytest.approx(1.0)
    # confidence 0.8 everywhere, 4 of 5 right: perfectly calibrated
    p = np.tile([0.8, 0.05, 0.05, 0.05, 0.05], (5, 1))
    assert expected_calibration_error(p, np.array([0, 0, 0, 0, 1])) == pytest.approx(0.0)
    # two bins: 0.9 (2 items, 1 right -> gap 0.4) and 0.6 (2 items, 2 right -> gap 0.4)
    p = np.array([[0.9, 0.1, 0, 0, 0], [0.9, 0.1, 0, 0, 0], [0.6, 0.4, 0, 0, 0], [0.6, 0.4, 0, 0, 0]])
    assert expected_calibration_error(p, np.array([0, 1, 0, 0])) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_ece_in_unit_interval_on_random_probs():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = softmax(rng.normal(0, 3, size=(50, 5)))
        e = expected_calibration_error(p, rng.integers(0, 5, 50))
        assert 0.0 <= e <= 1.0
