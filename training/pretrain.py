"""Self-supervised multitask pretraining on unlabeled microdialogues: TSDAE + next-sentence prediction.

- TSDAE (Wang et al. 2021): sentence-transformers' ``DenoisingAutoEncoderLoss`` with a tied decoder.
  The noise function is ours: it DELETES ``del_ratio`` (0.6) of the words. (The upstream v3 example
  keeps 60% instead, i.e. deletes 40%.)
- NSP: encode (therapist turn, client turn) as a pair; a linear layer on the CLS vector says whether
  the client turn really answered this therapist turn. Negatives: a client turn from another
  microdialogue (half of them from the same session, which is the harder case).
- loss = tsdae_weight * L_tsdae + nsp_weight * L_nsp (nsp_weight 0 gives the "TSDAE only" baseline).

Checkpoints hold model, optimizer, step and RNG states, so a run resumes where it stopped.

  python -m homework_monitor.training.pretrain --config smoke --out var/runs/tsdae_nsp-smoke
  python -m homework_monitor.training.pretrain --config full --device cuda --out var/runs/tsdae_nsp
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from homework_monitor.model import autocast, base_encoder_path

from .data import UnlabeledMicrodialogue, unlabeled_microdialogues


@dataclass(frozen=True)
class PretrainConfig:
    steps: int
    batch_size: int
    max_length: int = 64
    lr: float = 3e-5
    tsdae_weight: float = 1.0
    nsp_weight: float = 1.0
    del_ratio: float = 0.6
    seed: int = 13
    checkpoint_every: int = 500
    sources: tuple[str, ...] | None = None  # None = every corpus
    max_units: int | None = None  # cap on unlabeled microdialogues (smoke runs)


CONFIGS = {
    "smoke": PretrainConfig(steps=6, batch_size=8, max_length=48, checkpoint_every=3, max_units=400),
    # 1,500 steps x 64 = about 4.5 passes over the 21k unlabeled microdialogues (H100: ~1 min).
    "full": PretrainConfig(steps=1500, batch_size=64, max_length=64, lr=5e-5, checkpoint_every=500),
}


def delete_words(text: str, del_ratio: float, rng: random.Random) -> str:
    """TSDAE noise: drop each word with probability ``del_ratio``; always keep at least one."""
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if rng.random() >= del_ratio]
    return " ".join(kept) if kept else rng.choice(words)


def microdialogue_text(u: UnlabeledMicrodialogue) -> str:
    return f"{u.therapist} {u.client}" if u.client else u.therapist


def _embedding_dim(word_module) -> int:
    # sentence-transformers renamed the method in 6.1; the GPU image has 6.0.
    get = getattr(word_module, "get_embedding_dimension", None) or word_module.get_word_embedding_dimension
    return get()


class NSPHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 2)

    def forward(self, cls_vec: torch.Tensor) -> torch.Tensor:
        return self.linear(cls_vec)


class MultitaskPretrainer:
    """Owns the sentence-transformer (CLS pooling), tied TSDAE decoder, NSP head and optimizer."""

    def __init__(self, cfg: PretrainConfig, device: str = "cpu", encoder_path: Path | None = None):
        from sentence_transformers import SentenceTransformer, models
        try:
            from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss
        except ImportError:  # sentence-transformers < 6.1 (the GPU image)
            from sentence_transformers.losses import DenoisingAutoEncoderLoss
        self.cfg, self.device = cfg, device
        path = str(encoder_path or base_encoder_path())
        word = models.Transformer(path, max_seq_length=cfg.max_length)
        pooling = models.Pooling(_embedding_dim(word), "cls")
        self.model = SentenceTransformer(modules=[word, pooling], device=device)
        self.dae = DenoisingAutoEncoderLoss(self.model, tie_encoder_decoder=True).to(device)
        self.nsp = NSPHead(_embedding_dim(word)).to(device)
        # The tied decoder shares the encoder's tensors: dedupe them once, for the optimizer and clipping.
        self.params = list({id(p): p for p in list(self.dae.parameters()) + list(self.nsp.parameters())}.values())
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr)
        self.step = 0
        self.rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def _features(self, texts: Sequence[str], pair: Sequence[str] | None = None) -> dict:
        enc = self.tokenizer(list(texts), list(pair) if pair is not None else None, padding=True,
                             truncation="longest_first" if pair is not None else True,
                             max_length=self.cfg.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def tsdae_loss(self, texts: Sequence[str]) -> torch.Tensor:
        noisy = [delete_words(t, self.cfg.del_ratio, self.rng) for t in texts]
        return self.dae([self._features(noisy), self._features(texts)], None)

    def nsp_batch(self, batch: Sequence[UnlabeledMicrodialogue],
                  pool: Sequence[UnlabeledMicrodialogue]) -> tuple[list[str], list[str], torch.Tensor]:
        th, cl, y = [], [], []
        with_client = [u for u in pool if u.client]
        for u in batch:
            if not u.client:
                continue
            if self.rng.random() < 0.5:
                th.append(u.therapist), cl.append(u.client), y.append(1)
            else:
                # A negative: another microdialogue's client turn (a few tries to find a different
                # text; with none, the pair is skipped rather than mislabelled).
                other = next((o for o in (self.rng.choice(with_client) for _ in range(8))
                              if o.client != u.client), None)
                if other is None:
                    continue
                th.append(u.therapist), cl.append(other.client), y.append(0)
        return th, cl, torch.tensor(y, device=self.device)

    def nsp_loss(self, th: Sequence[str], cl: Sequence[str], y: torch.Tensor) -> torch.Tensor:
        if not th:
            return torch.zeros((), device=self.device)
        out = self.model[0](self._features(th, cl))  # the Transformer module: token embeddings
        return nn.functional.cross_entropy(self.nsp(out["token_embeddings"][:, 0]), y)

    def train_step(self, batch: Sequence[UnlabeledMicrodialogue],
                   pool: Sequence[UnlabeledMicrodialogue]) -> dict[str, float]:
        self.dae.train(), self.nsp.train()
        with autocast(self.device):
            l_tsdae = self.tsdae_loss([microdialogue_text(u) for u in batch])
            loss = self.cfg.tsdae_weight * l_tsdae
            l_nsp = torch.zeros((), device=self.device)
            if self.cfg.nsp_weight > 0:
                l_nsp = self.nsp_loss(*self.nsp_batch(batch, pool))
                loss = loss + self.cfg.nsp_weight * l_nsp
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), "tsdae": float(l_tsdae.detach()), "nsp": float(l_nsp.detach())}

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"step": self.step, "dae": self.dae.state_dict(), "nsp": self.nsp.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "py_rng": self.rng.getstate(),
                    "torch_rng": torch.get_rng_state(), "config": asdict(self.cfg)}, tmp)
        tmp.replace(path)  # atomic: a crash mid-save never leaves a broken checkpoint

    def load_checkpoint(self, path: Path) -> None:
        ck = torch.load(path, map_location=self.device, weights_only=False)
        self.dae.load_state_dict(ck["dae"])
        self.nsp.load_state_dict(ck["nsp"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.rng.setstate(ck["py_rng"])
        torch.set_rng_state(ck["torch_rng"])
        self.step = ck["step"]

    def save_encoder(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        self.model[0].auto_model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        return out


def batches(units: Sequence[UnlabeledMicrodialogue], batch_size: int, rng: np.random.Generator):
    if not units:
        raise ValueError("no unlabeled microdialogues to pretrain on")
    batch_size = min(batch_size, len(units))
    while True:
        perm = rng.permutation(len(units))
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield [units[j] for j in perm[i:i + batch_size]]


def pretrain(units: Sequence[UnlabeledMicrodialogue], cfg: PretrainConfig, out: Path,
             device: str = "cpu", progress: bool = True) -> dict:
    from tqdm import tqdm
    trainer = MultitaskPretrainer(cfg, device)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        trainer.load_checkpoint(ckpt)
    rng = np.random.default_rng(cfg.seed + trainer.step)
    it = batches(units, cfg.batch_size, rng)
    history, t0 = [], time.time()
    bar = tqdm(total=cfg.steps, initial=trainer.step, disable=not progress, desc="pretrain")
    while trainer.step < cfg.steps:
        stats = trainer.train_step(next(it), units)
        history.append(stats)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
        if trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps:
            trainer.save_checkpoint(ckpt)
    bar.close()
    trainer.save_encoder(out / "encoder")
    elapsed = time.time() - t0
    report = {"config": asdict(cfg), "units": len(units), "steps": trainer.step,
              "seconds": round(elapsed, 1), "device": device,
              "first_losses": history[:5], "last_losses": history[-5:],
              "mean_loss_last_100": {k: float(np.mean([h[k] for h in history[-100:]]))
                                     for k in ("loss", "tsdae", "nsp")} if history else {}}
    (out / "pretrain.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    from homework_monitor.stream.config import default_data_dir
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="smoke")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-nsp", action="store_true", help="TSDAE only (the ablation baseline)")
    p.add_argument("--steps", type=int)
    p.add_argument("--exclude-sessions", type=Path,
                   help="JSONL with session_id fields to leave out (evaluation sessions)")
    a = p.parse_args(argv)
    cfg = CONFIGS[a.config]
    if a.no_nsp:
        cfg = replace(cfg, nsp_weight=0.0)
    if a.steps:
        cfg = replace(cfg, steps=a.steps)
    exclude = set()
    if a.exclude_sessions:
        from .data import read_jsonl
        exclude = {d["session_id"] for d in read_jsonl(a.exclude_sessions)}
    units = unlabeled_microdialogues(a.data_dir, cfg.sources, exclude)
    if cfg.max_units:
        units = units[: cfg.max_units]
    print(json.dumps(pretrain(units, cfg, a.out, a.device), indent=2))


if __name__ == "__main__":
    main()
