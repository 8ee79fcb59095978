#!/usr/bin/env python3
"""Round 4: the turns where the served model and the v2 head disagree, and in-session exercises.

The v2 head (``artifact/v2_head``) beats the served model on every real held-out measure, yet on the
written demo sessions it fires on in-session exercises ("let's do it right now together") and
elaborations. Whether real clinical talk has the same failure is what this round labels: clinical
therapist utterances (annomi, hlqc, mibot, pa_counseling) not labelled before, drawn by

  r4_v2_only       the v2 head raises a live event (top class not none, p >= 0.6) and the served model not
  r4_served_only   the served model does and the v2 head not
  r4_both          both do
  r4_in_session    neither does, and the turn has in-session exercise wording (IN_SESSION below)
  r4_random        random turns (>= 4 words), neither does: the base rate of what both models call none

Each stratum but r4_random takes up to its QUOTA (the disagreement strata are small: all of them);
r4_random fills the round to TOTAL items. At most MAX_PER_SESSION items per session; a text already drawn is not
drawn again. The annotators never see how an item was drawn (``why`` is only in the meta files). The
unit, id numbering, batch text and meta formats are round 1's (select_batches.py); ids continue with
prefix ``d`` after round 3, batches after batch_28.

  python training/annotation/select_round4.py --out /work/annot4/batches \
      --v2-head <v2_head folder of 432a649> --labels-dir <labels folder without this round's files>

Then ``--extend-random 360`` wrote the random stratum's next 360 draws (batch_32..34, d03721..): its
first 106 held only 2 assignments, each standing for 32 turns, too few to estimate recall on.

Needs the installed package (the two heads score each item; the encoder runs once per text, cached in
``--work-dir``, the same cache as ``python -m homework_monitor.training.pair_student``).
"""
import argparse
import collections
import json
import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import select_batches as sb

from homework_monitor.runtime import OnnxClassifier
from homework_monitor.training.data import utterance_examples
from homework_monitor.training.head import softmax
from homework_monitor.training.metrics import fires
from homework_monitor.training.pair_student import TWO_VIEWS, EmbeddingCache, features
from homework_monitor.triton_models import SERVED_ARTIFACT

SEED = 74
THRESHOLD = 0.6  # the served event threshold (Settings.event_threshold)
TOTAL = 360  # three batches
QUOTA = {"r4_v2_only": 120, "r4_served_only": 120, "r4_both": 120, "r4_in_session": 120}
MAX_PER_SESSION = 6
R4_ID_OFFSET = sb.R3_ID_OFFSET + 240          # round 3 used c03121..c03360
R4_BATCH_OFFSET = sb.R3_BATCH_OFFSET + 2      # round 3 used batch_27..batch_28
IN_SESSION = re.compile(
    r"\b(?:right now|right here|in (?:this|today's|our) session|here (?:with me|together)|together now"
    r"|let(?:'s| us) (?:try|do|practi[cs]e|take|start|go through|walk through|pause|slow down|just)"
    r"|close your eyes|take (?:a|another|some) (?:deep |slow )?breaths?|breathe in|notice (?:your|how|what|where)"
    r"|imagine|picture (?:yourself|that)|pretend|role ?play|as if i were|show me|say it (?:out loud|again)"
    r"|read (?:it|this|that) (?:out loud|aloud)|fill (?:it|this) (?:in|out) (?:now|together)"
    r"|on a scale (?:of|from))", re.I)


def candidates(data_dir, labels_dir):
    """Every clinical therapist utterance not labelled before, as (dataset, session_id, turn, example)."""
    taken = {(r["dataset"], r["session_id"], int(r["turn"]))
             for r in sb.read_jsonl(os.path.join(data_dir, "labeled", "real_dev.jsonl")) if r.get("turn") is not None}
    for p in sorted(Path(labels_dir).glob("*.jsonl")):
        taken |= {(r["dataset"], r["session_id"], int(r["turn"])) for r in sb.read_jsonl(p)}
    out, corpora = [], {}
    for ds in sb.CLINICAL:
        corpora[ds] = {s["session_id"]: s for s in sb.read_jsonl(os.path.join(data_dir, "corpora", ds, "sessions.jsonl"))}
        for sid, s in sorted(corpora[ds].items()):
            if (s.get("meta") or {}).get("dup_of_annomi"):
                continue  # hlqc copies of AnnoMI videos: near-duplicates of annomi items
            for turn, ex in sorted(utterance_examples(s).items()):
                if (ds, sid, turn) not in taken and len(ex.therapist.split()) >= sb.MIN_WORDS:
                    out.append((ds, sid, turn, ex))
    return out, corpora, len(taken)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for batch_NN.txt / .meta.jsonl (outside the repository)")
    ap.add_argument("--data-dir", default=sb.DATA)
    ap.add_argument("--work-dir", default="var/pair_student", help="embedding cache folder")
    ap.add_argument("--labels-dir", default=str(Path(__file__).resolve().parents[1] / "labels"),
                    help="keys labelled here are not drawn (round 4 ran with the three earlier rounds' files)")
    ap.add_argument("--v2-head", default=str(SERVED_ARTIFACT / "v2_head"),
                    help="the v2 head to compare (round 4 used minilm_v2_head-c602c5d0, in git at 432a649)")
    ap.add_argument("--extend-random", type=int, default=0, metavar="N",
                    help="write only the random stratum's next N draws (batches after the round's three)")
    ap.add_argument("--strata-out", default=str(Path(__file__).resolve().parents[1] / "labels"
                                                / "model_disagreement_2026-12.strata.json"))
    args = ap.parse_args()
    sb.DATA = args.data_dir
    cands, corpora, n_taken = candidates(args.data_dir, args.labels_dir)
    served = OnnxClassifier(SERVED_ARTIFACT)
    v2 = OnnxClassifier(Path(args.v2_head))
    if served.spec.views != TWO_VIEWS or v2.spec.views != TWO_VIEWS:
        sys.exit("both heads must read the pair and therapist views")
    X = features(EmbeddingCache(served, Path(args.work_dir) / f"embeddings-{served.version}.npz"),
                 [c[3] for c in cands]).inputs(TWO_VIEWS)

    f_served, f_v2 = (fires(softmax(clf.head_logits(X), clf.spec.temperature), THRESHOLD) for clf in (served, v2))
    stratum = np.where(f_v2 & ~f_served, "r4_v2_only",
                       np.where(f_served & ~f_v2, "r4_served_only", np.where(f_served & f_v2, "r4_both", "")))
    for i, (_, _, _, ex) in enumerate(cands):
        if not stratum[i]:
            stratum[i] = "r4_in_session" if IN_SESSION.search(ex.therapist) else "r4_random"
    pool_sizes = collections.Counter(stratum.tolist())

    rng = random.Random(SEED)
    order = list(range(len(cands)))
    rng.shuffle(order)
    per_session, seen_text, chosen = collections.Counter(), set(), []
    for why in [*QUOTA, "r4_random"]:
        n, got = QUOTA.get(why, TOTAL + args.extend_random - len(chosen)), 0
        for i in order:
            ds, sid, turn, ex = cands[i]
            if got == n:
                break
            if stratum[i] != why or per_session[sid] >= MAX_PER_SESSION or ex.therapist.lower() in seen_text:
                continue
            per_session[sid] += 1
            seen_text.add(ex.therapist.lower())
            chosen.append({"dataset": ds, "session_id": sid, "turn": turn, "why": why})
            got += 1
    # --extend-random: the random stratum's next draws in the same order (the first TOTAL items are the
    # round's own, unchanged), written as further batches; the stratum's weight follows its larger draw.
    new = chosen[TOTAL:] if args.extend_random else chosen
    id_offset, batch_offset = (R4_ID_OFFSET + TOTAL, R4_BATCH_OFFSET + TOTAL // sb.BATCH_SIZE) if args.extend_random \
        else (R4_ID_OFFSET, R4_BATCH_OFFSET)
    n_batches = len(new) // sb.BATCH_SIZE
    batches = sb.deal_batches(new, n_batches, random.Random(SEED + 1) if args.extend_random else rng)
    mds = {}

    def get_md(ds, sid):
        if (ds, sid) not in mds:
            mds[(ds, sid)] = sb.microdialogues(corpora[ds][sid])
        return mds[(ds, sid)]

    sb.write_batches(args.out, batches, batch_offset, "d", id_offset, get_md)
    sdev = {s["session_id"] for s in sb.read_jsonl(os.path.join(args.data_dir, "labeled", "sessions_dev.jsonl"))}
    summary = {
        "round": 4, "seed": SEED, "threshold": THRESHOLD, "served": served.version, "v2_head": v2.version,
        "n_candidates": len(cands), "excluded_labelled_keys": n_taken, "pool_per_why": dict(pool_sizes),
        "n_items": len(chosen), "per_why": dict(collections.Counter(c["why"] for c in chosen)),
        "per_dataset": dict(collections.Counter(c["dataset"] for c in chosen)),
        "items_in_sessions_dev_sessions": sum(c["session_id"] in sdev for c in chosen),
        "max_items_per_session": max(per_session.values()),
        "per_batch_why": [dict(collections.Counter(it["why"] for it in b)) for b in batches],
    }
    with open(os.path.join(args.out, "selection_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    # Each stratum's pool and draw: the weights that score these items as a sample of the pool
    # (training.data.model_drawn_strata).
    strata = {"drawn_by": f"training/annotation/select_round4.py (seed {SEED})", "served": served.version,
              "v2_head": v2.version, "threshold": THRESHOLD,
              "population": "clinical therapist utterances (annomi, hlqc, mibot, pa_counseling; >= 4 words) "
                            "not labelled before round 4",
              "strata": {why: {"pool": pool_sizes[why], "drawn": summary["per_why"][why]} for why in summary["per_why"]}}
    with open(args.strata_out, "w") as f:
        json.dump(strata, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
