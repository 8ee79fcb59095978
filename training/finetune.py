"""End-to-end fine-tuning of the generic encoder (the "fine-tuned MiniLM" baseline of Table 1).

Same input views, pooling and head as the frozen model, but every encoder weight trains too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from homework_monitor.model import Encoder, Example, Head, autocast, featurize, pool, view_text

from .head import class_weights


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 4
    batch_size: int = 32
    lr_encoder: float = 3e-5
    lr_head: float = 1e-3
    max_length: int = 128
    head_hidden: int = 256
    dropout: float = 0.2
    real_weight: float = 2.0
    max_steps: int | None = None  # smoke runs
    seed: int = 13


class FinetunedModel(nn.Module):
    def __init__(self, encoder_path: Path, views: Sequence[str], pooling: str, cfg: FinetuneConfig,
                 n_classes: int, device: str):
        super().__init__()
        self.enc = Encoder(encoder_path, pooling, cfg.max_length, device)
        self.views, self.pooling, self.device = tuple(views), pooling, device
        hidden = self.enc.model.config.hidden_size
        self.head = Head(hidden * len(self.views), cfg.head_hidden, n_classes, cfg.dropout).to(device)

    def forward(self, examples: Sequence[Example]) -> torch.Tensor:
        blocks = []
        for v in self.views:
            texts = [view_text(e, v) for e in examples]
            tok = self.enc.tokenizer
            if isinstance(texts[0], tuple):
                enc = tok([t[0] for t in texts], [t[1] for t in texts], padding=True,
                          truncation="longest_first", max_length=self.enc.max_length, return_tensors="pt")
            else:
                enc = tok(texts, padding=True, truncation=True, max_length=self.enc.max_length,
                          return_tensors="pt")
            enc = {k: t.to(self.device) for k, t in enc.items()}
            hidden = self.enc.model(**enc).last_hidden_state
            blocks.append(pool(hidden, enc["attention_mask"], self.pooling).float())
        return self.head(torch.cat(blocks, dim=1))


def finetune(encoder_path: Path, examples: Sequence[Example], y: np.ndarray, sample_weight: np.ndarray,
             views: Sequence[str], pooling: str, cfg: FinetuneConfig, n_classes: int,
             device: str = "cpu", progress: bool = False) -> FinetunedModel:
    from tqdm import tqdm
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FinetunedModel(encoder_path, views, pooling, cfg, n_classes, device)
    model.enc.model.train()
    opt = torch.optim.AdamW([{"params": model.enc.model.parameters(), "lr": cfg.lr_encoder},
                             {"params": model.head.parameters(), "lr": cfg.lr_head}], weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y, n_classes).to(device), reduction="none")
    steps_per_epoch = int(np.ceil(len(y) / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(total, 1)))
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    sw = torch.from_numpy(sample_weight.astype(np.float32)).to(device)
    step = 0
    with tqdm(total=total, disable=not progress, desc="finetune") as bar:
        while step < total:
            perm = rng.permutation(len(y))
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                with autocast(device):
                    logits = model([examples[j] for j in idx]).float()
                ti = torch.from_numpy(idx).to(device)
                loss = (loss_fn(logits, yt[ti]) * sw[ti]).sum() / sw[ti].sum()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
                if step >= total:
                    break
    model.eval()
    model.enc.model.eval()
    return model


@torch.inference_mode()
def finetuned_logits(model: FinetunedModel, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
    feats = torch.from_numpy(featurize(model.enc, examples, model.views, batch_size)).to(model.device)
    return model.head(feats).float().cpu().numpy()
