"""End-to-end fine-tuning of the generic encoder (the "fine-tuned MiniLM" baseline of Table 1).

Same input views, pooling and head as the frozen model, but every encoder weight trains too.
Optional (model v2): a review output trained jointly (``JointHead``, masked binary loss), and soft
targets (a teacher's probabilities) for distillation, mixed with hard labels item by item.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from homework_monitor.model import Encoder, Example, Head, autocast, featurize, pool, view_text

from .head import JointHead, class_weights, masked_bce, review_pos_weight


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
    review_weight: float = 1.0  # weight of the review output's loss (when review targets are given)
    # Batches of similar length: each batch pads to its longest item, and random batches of these
    # microdialogues are about twice the tokens of their content (pair view: 869k padded vs 424k real
    # tokens per epoch). Order within an epoch stays random at the level of batches.
    length_buckets: bool = False


class FinetunedModel(nn.Module):
    def __init__(self, encoder_path: Path, views: Sequence[str], pooling: str, cfg: FinetuneConfig,
                 n_classes: int, device: str, review_head: bool = False):
        super().__init__()
        self.enc = Encoder(encoder_path, pooling, cfg.max_length, device)
        self.views, self.pooling, self.device = tuple(views), pooling, device
        hidden = self.enc.model.config.hidden_size
        head_type = JointHead if review_head else Head
        self.head = head_type(hidden * len(self.views), cfg.head_hidden, n_classes, cfg.dropout).to(device)
        # Only what the encoder takes: MPNet has no token_type_ids, whatever a tokenizer returns.
        self._inputs = set(inspect.signature(self.enc.model.forward).parameters)

    @property
    def class_head(self) -> Head:
        """The 5-class head, as served (the review output is an extra on top of it)."""
        return self.head.cls if isinstance(self.head, JointHead) else self.head

    def forward(self, examples: Sequence[Example]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
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
            enc = {k: t.to(self.device) for k, t in enc.items() if k in self._inputs}
            hidden = self.enc.model(**enc).last_hidden_state
            blocks.append(pool(hidden, enc["attention_mask"], self.pooling).float())
        return self.head(torch.cat(blocks, dim=1))


def finetune(encoder_path: Path, examples: Sequence[Example], y: np.ndarray, sample_weight: np.ndarray,
             views: Sequence[str], pooling: str, cfg: FinetuneConfig, n_classes: int,
             device: str = "cpu", progress: bool = False, review: np.ndarray | None = None,
             soft: np.ndarray | None = None, head_init: Path | None = None) -> FinetunedModel:
    """Fine-tune end to end. ``review``: 0/1 per item, NaN where not annotated (adds the review output);
    ``soft``: [n, n_classes] target probabilities per item, NaN rows where the hard ``y`` applies;
    ``head_init``: a trained 5-class head (safetensors of ``Head``) to start from instead of random
    weights, for continuing a fine-tuned model whose encoder is ``encoder_path``."""
    from tqdm import tqdm
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FinetunedModel(encoder_path, views, pooling, cfg, n_classes, device, review_head=review is not None)
    if head_init is not None:
        from safetensors.torch import load_file
        model.class_head.load_state_dict(load_file(str(head_init), device=device))
    model.enc.model.train()
    opt = torch.optim.AdamW([{"params": model.enc.model.parameters(), "lr": cfg.lr_encoder},
                             {"params": model.head.parameters(), "lr": cfg.lr_head}], weight_decay=0.01)
    steps_per_epoch = int(np.ceil(len(y) / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(total, 1)))
    hard = np.ones(len(y), bool) if soft is None else np.isnan(soft).any(1)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y[hard], n_classes).to(device), reduction="none")
    yt = torch.from_numpy(np.where(hard, y, 0).astype(np.int64)).to(device)
    sw = torch.from_numpy(sample_weight.astype(np.float32)).to(device)
    st = None if soft is None else torch.from_numpy(np.nan_to_num(soft).astype(np.float32)).to(device)
    ht = torch.from_numpy(hard).to(device)
    rt = None if review is None else torch.from_numpy(review.astype(np.float32)).to(device)
    pos_weight = 1.0 if review is None else review_pos_weight(review)
    # Characters stand in for tokens: only the order matters, and no tokenizer pass is needed.
    lengths = (np.array([sum(len("".join(_texts(view_text(e, v)))) for v in views) for e in examples])
               if cfg.length_buckets else np.zeros(len(examples)))
    step = 0
    with tqdm(total=total, disable=not progress, desc="finetune") as bar:
        while step < total:
            for idx in epoch_batches(rng, lengths, cfg.batch_size, cfg.length_buckets):
                with autocast(device):
                    out = model([examples[j] for j in idx])
                logits, rev = (out[0].float(), out[1].float()) if isinstance(out, tuple) else (out.float(), None)
                ti = torch.from_numpy(idx).to(device)
                per_item = loss_fn(logits, yt[ti])
                if st is not None:  # soft rows: cross-entropy against the teacher's distribution
                    soft_ce = -(st[ti] * torch.log_softmax(logits, dim=1)).sum(1)
                    per_item = torch.where(ht[ti], per_item, soft_ce)
                loss = (per_item * sw[ti]).sum() / sw[ti].sum()
                if rev is not None:
                    loss = loss + cfg.review_weight * masked_bce(rev, rt[ti], pos_weight)
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


def _texts(text: str | tuple[str, str]) -> tuple[str, ...]:
    return (text,) if isinstance(text, str) else text


def epoch_batches(rng: np.random.Generator, lengths: np.ndarray, batch_size: int,
                  by_length: bool, pool_batches: int = 50) -> list[np.ndarray]:
    """One epoch's batches, every item once. ``by_length``: a random permutation cut into pools of
    ``pool_batches`` batches, each pool sorted by length and cut into batches, the batches shuffled
    (the usual "sortish" sampler: similar lengths in a batch, random content and order)."""
    perm = rng.permutation(len(lengths))
    if not by_length:
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    pool = batch_size * pool_batches
    batches = []
    for i in range(0, len(perm), pool):
        part = perm[i:i + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.inference_mode()
def finetuned_logits(model: FinetunedModel, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
    return finetuned_outputs(model, examples, batch_size)[0]


@torch.inference_mode()
def finetuned_outputs(model: FinetunedModel, examples: Sequence[Example],
                      batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """Class logits [n, 5] and, for a model with the review output, review logits [n] (else None)."""
    feats = torch.from_numpy(featurize(model.enc, examples, model.views, batch_size)).to(model.device)
    out = model.head(feats)
    if isinstance(out, tuple):
        return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
    return out.float().cpu().numpy(), None
