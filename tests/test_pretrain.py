"""TSDAE + NSP pretraining: the noise function, NSP pairs, batching, one real step and resumable checkpoints."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from homework_monitor.training.data import UnlabeledMicrodialogue as U
from homework_monitor.training.pretrain import (
    MultitaskPretrainer,
    PretrainConfig,
    batches,
    delete_words,
    microdialogue_text,
    pretrain,
)

WORD = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)

# Written for these tests (not taken from any corpus).
BATCH = [
    U("test", "sa", 0, "Could you write down three thoughts each evening this week?", "Sure, I can try that."),
    U("test", "sa", 2, "How did the breathing exercise go since we last met?", "It helped a bit on the bus."),
    U("test", "sb", 0, "Let's plan one small walk outside before Thursday.", "Okay, maybe after lunch."),
    U("test", "sb", 2, "I'd like you to read the handout about sleep hygiene.", "I will read it tonight."),
]
CFG = PretrainConfig(steps=10, batch_size=4, max_length=32, lr=1e-4)


# --- delete_words --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 13, 2024])
def test_delete_words_deletes_sixty_percent(seed):
    words = [f"w{i}" for i in range(20_000)]
    out = delete_words(" ".join(words), 0.6, random.Random(seed)).split()
    kept = len(out) / len(words)
    assert abs(kept - 0.4) < 0.015, kept  # binomial sd is 0.0035 here
    # deletion only: the kept words are an ordered subsequence of the original
    idx = [int(w[1:]) for w in out]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)


def test_delete_words_ratio_is_the_deleted_share():
    text = " ".join(f"x{i}" for i in range(10_000))
    assert len(delete_words(text, 0.1, random.Random(5)).split()) > 8_500
    assert len(delete_words(text, 0.9, random.Random(5)).split()) < 1_500
    assert delete_words(text, 0.0, random.Random(5)) == text


def test_delete_words_is_seeded():
    text = " ".join(f"t{i}" for i in range(200))
    assert delete_words(text, 0.6, random.Random(3)) == delete_words(text, 0.6, random.Random(3))


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_delete_words_empty_text_unchanged(text):
    assert delete_words(text, 0.6, random.Random(0)) == text


@settings(max_examples=150, deadline=None)
@given(words=st.lists(WORD, min_size=1, max_size=30), ratio=st.floats(0.0, 1.0), seed=st.integers(0, 10**6))
def test_delete_words_keeps_at_least_one_word(words, ratio, seed):
    out = delete_words(" ".join(words), ratio, random.Random(seed)).split()
    assert 1 <= len(out) <= len(words)
    assert set(out) <= set(words)


def test_delete_words_everything_deleted_keeps_one_original_word():
    words = ["alpha", "beta", "gamma"]
    out = delete_words(" ".join(words), 1.0, random.Random(0))
    assert out in words


def test_microdialogue_text():
    assert microdialogue_text(U("s", "x", 0, "Therapist says.", "Client says.")) == "Therapist says. Client says."
    assert microdialogue_text(U("s", "x", 0, "Therapist only.", None)) == "Therapist only."


# --- NSP pairs (no model needed: nsp_batch only uses self.rng and self.device) --------------------
def _nsp_self(seed=0, rng=None):
    return SimpleNamespace(rng=rng or random.Random(seed), device="cpu")


def test_nsp_batch_pairs_and_negatives():
    pool = BATCH + [U("test", "sc", 0, "Any questions?", None)]
    true_client = {u.therapist: u.client for u in BATCH}
    seen = set()
    for seed in range(20):
        th, cl, y = MultitaskPretrainer.nsp_batch(_nsp_self(seed), pool, pool)
        assert len(th) == len(cl) == len(y) == 4  # units without a client reply are skipped
        assert y.dtype == torch.int64
        for t, c, lab in zip(th, cl, y.tolist()):
            assert t in true_client and c in true_client.values()
            assert (c == true_client[t]) == (lab == 1)  # negatives never reuse the true reply
            seen.add(lab)
    assert seen == {0, 1}


class _SpinGuard(random.Random):
    """random.Random that refuses to be asked for choices forever (turns a hang into an error)."""

    def __init__(self, seed):
        super().__init__(seed)
        self.calls = 0

    def choice(self, seq):
        self.calls += 1
        if self.calls > 2000:
            raise RuntimeError("nsp_batch keeps drawing negatives: infinite loop")
        return super().choice(seq)


def test_nsp_batch_terminates_when_all_client_turns_are_identical():
    """Regression: with no different client text to draw, the negative used to be redrawn forever."""
    pool = [U("test", "s", i, f"Therapist turn {i}.", "Okay.") for i in range(4)]
    th, cl, y = MultitaskPretrainer.nsp_batch(_nsp_self(rng=_SpinGuard(1)), pool, pool)
    assert len(th) == len(cl) == len(y)


# --- batching ----------------------------------------------------------------------------------
def test_batches_cover_each_unit_once_per_pass():
    units = list(range(10))
    it = batches(units, 3, np.random.default_rng(0))
    first_pass = [next(it) for _ in range(3)]  # 10 // 3 full batches; the remainder is dropped
    assert all(len(b) == 3 for b in first_pass)
    flat = [x for b in first_pass for x in b]
    assert len(set(flat)) == 9
    assert len(next(it)) == 3  # and the generator moves on to a new permutation


class _PermGuard:
    def __init__(self):
        self.calls = 0

    def permutation(self, n):
        self.calls += 1
        if self.calls > 100:
            raise RuntimeError("batches() spins without yielding")
        return np.arange(n)


def test_batches_with_fewer_units_than_batch_size_does_not_hang():
    """Regression: with fewer units than batch_size the generator used to spin without yielding."""
    it = batches(BATCH[:3], 8, _PermGuard())
    try:
        b = next(it)
    except ValueError:
        return  # refusing loudly is fine too
    assert 0 < len(b) <= 3
    assert 0 < len(next(it)) <= 3


def test_batches_with_no_units_does_not_hang():
    it = batches([], 4, _PermGuard())
    with pytest.raises(ValueError):
        next(it)


# --- one real step (loads MiniLM) -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trainer():
    return MultitaskPretrainer(CFG, "cpu")


def _combined_loss(tr: MultitaskPretrainer, seed: int = 123) -> float:
    """TSDAE + NSP loss on BATCH with the same deletion noise and NSP pairs every time (eval mode)."""
    tr.rng = random.Random(seed)
    tr.dae.eval(), tr.nsp.eval()
    with torch.no_grad():
        l_tsdae = tr.tsdae_loss([microdialogue_text(u) for u in BATCH])
        l_nsp = tr.nsp_loss(*tr.nsp_batch(BATCH, BATCH))
    return float(tr.cfg.tsdae_weight * l_tsdae + tr.cfg.nsp_weight * l_nsp)


def _state(tr: MultitaskPretrainer) -> dict[str, torch.Tensor]:
    sd = {f"dae.{k}": v.detach().clone() for k, v in tr.dae.state_dict().items()}
    sd.update({f"nsp.{k}": v.detach().clone() for k, v in tr.nsp.state_dict().items()})
    return sd


@pytest.mark.slow
def test_train_steps_lower_the_loss(trainer):
    before = _combined_loss(trainer)
    again = _combined_loss(trainer)
    assert before == pytest.approx(again)  # the measurement itself is deterministic
    step0 = trainer.step
    for _ in range(3):
        trainer.rng = random.Random(123)  # the same noise as the measurement
        stats = trainer.train_step(BATCH, BATCH)
        assert set(stats) == {"loss", "tsdae", "nsp"} and all(np.isfinite(v) for v in stats.values())
    assert trainer.step == step0 + 3
    after = _combined_loss(trainer)
    assert after < before - 0.5, (before, after)


@pytest.mark.slow
def test_checkpoint_round_trip_resumes(trainer, tmp_path):
    trainer.rng = random.Random(7)
    trainer.train_step(BATCH, BATCH)
    ck = tmp_path / "run" / "checkpoint.pt"
    trainer.save_checkpoint(ck)
    assert ck.exists() and not ck.with_suffix(".tmp").exists()
    saved_state, saved_step, saved_rng = _state(trainer), trainer.step, trainer.rng.getstate()
    # what an uninterrupted run does next
    expected = trainer.train_step(BATCH, BATCH)

    fresh = MultitaskPretrainer(CFG, "cpu")
    assert fresh.step == 0
    assert not all(torch.equal(v, saved_state[k]) for k, v in _state(fresh).items())
    fresh.load_checkpoint(ck)
    assert fresh.step == saved_step
    assert fresh.rng.getstate() == saved_rng
    restored = _state(fresh)
    assert restored.keys() == saved_state.keys()
    assert all(torch.equal(restored[k], saved_state[k]) for k in saved_state)
    assert fresh.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
    # resumed run takes the same next step (weights, optimizer moments, noise and dropout RNG restored)
    got = fresh.train_step(BATCH, BATCH)
    assert fresh.step == saved_step + 1
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_pretrain_driver_resumes_from_checkpoint(trainer, tmp_path):
    """pretrain() picks up out/checkpoint.pt: a run already at ``steps`` trains no further and its
    saved encoder is exactly the checkpointed one."""
    trainer.rng = random.Random(11)
    trainer.train_step(BATCH, BATCH)
    trainer.save_checkpoint(tmp_path / "checkpoint.pt")
    cfg = replace(CFG, steps=trainer.step)
    report = pretrain(BATCH * 2, cfg, tmp_path, progress=False)
    assert report["steps"] == trainer.step and report["first_losses"] == []  # nothing left to do
    saved = json.loads((tmp_path / "pretrain.json").read_text())
    assert saved["steps"] == trainer.step and saved["units"] == 8
    from transformers import AutoModel
    enc = AutoModel.from_pretrained(str(tmp_path / "encoder")).state_dict()
    mine = trainer.model[0].auto_model.state_dict()
    assert enc.keys() == mine.keys()
    assert all(torch.equal(enc[k], mine[k]) for k in mine)
    from homework_monitor.model import Encoder
    emb = Encoder(tmp_path / "encoder", "cls", 16).embed(["Write it down tonight.", ("Hi.", "Hello.")])
    assert emb.shape == (2, 384) and np.isfinite(emb).all()
