#!/usr/bin/env python3
"""Merge blind annotator votes into labels (stdlib only).

Inputs (under --root):
  batches/batch_NN.txt, batches/batch_NN.meta.jsonl     from build_batches.py
  out/batch_NN.A.jsonl, out/batch_NN.B.jsonl            every item: {"id","labels":[...],"review":bool,"confidence"}
  out/batch_NN.C.jsonl (optional)                       adjudicator, only the items A and B disagree on
Outputs:
  batches/batch_NN.adjudicate.txt   disagreement items (primary label or review) still without a C vote
  labels.jsonl                      one row per decided item, NO TEXT
  agreement.md                      per-batch agreement table

Rules: primary = labels[0]. A and B agree on primary and review -> their label.
Otherwise C is needed: label = majority of the three primary votes (all three differ -> C's),
review = majority of the three review votes. `labels` = the final primary first, then any other
category named by a majority of the voters (none stands alone). Items still waiting for C are left
out of labels.jsonl (listed in the adjudicate file and counted in agreement.md).
"""
import argparse
import collections
import glob
import json
import os
import re

CLASSES = ("none", "practice", "take_action", "journal", "learn")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_votes(path, warn):
    out = {}
    for r in read_jsonl(path):
        labels = r.get("labels") or []
        if isinstance(labels, str):
            labels = [labels]
        labels = [c for c in labels if c in CLASSES]
        if not labels:
            warn.append("{}: {} has no valid label {!r}".format(os.path.basename(path), r.get("id"), r.get("labels")))
            continue
        if "none" in labels and len(labels) > 1:
            warn.append("{}: {} mixes none with {!r} (primary kept)".format(os.path.basename(path), r["id"], labels))
            labels = ["none"] if labels[0] == "none" else [c for c in labels if c != "none"]
        if r["id"] in out:
            warn.append("{}: duplicate id {} (last kept)".format(os.path.basename(path), r["id"]))
        rv = r.get("review")
        out[r["id"]] = {"labels": labels, "review": rv if isinstance(rv, bool) else str(rv).lower() == "true"}
    return out


def cohen_kappa(a, b):
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = collections.Counter(a), collections.Counter(b)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if pe >= 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1 - pe)


def majority(votes, tiebreak):
    c = collections.Counter(votes)
    top, n = c.most_common(1)[0]
    return top if n * 2 > len(votes) else tiebreak


def split_blocks(txt_path):
    blocks, cur = {}, None
    with open(txt_path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"### (\S+)", line)
            if m:
                cur = m.group(1)
                blocks[cur] = [line]
            elif cur is not None:
                blocks[cur].append(line)
    return {k: "".join(v).rstrip("\n") + "\n" for k, v in blocks.items()}


def pct(x):
    return "-" if x is None else "%.1f" % (100 * x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="annotation folder with batches/ and out/ (outside the repository)")
    args = ap.parse_args()
    bdir, odir = os.path.join(args.root, "batches"), os.path.join(args.root, "out")
    warn, rows, table = [], [], []
    pool_a, pool_b = [], []
    for meta_path in sorted(glob.glob(os.path.join(bdir, "batch_*.meta.jsonl"))):
        name = os.path.basename(meta_path)[:-len(".meta.jsonl")]
        meta = read_jsonl(meta_path)
        paths = {k: os.path.join(odir, f"{name}.{k}.jsonl") for k in "ABC"}
        if not (os.path.exists(paths["A"]) and os.path.exists(paths["B"])):
            table.append((name, len(meta)) + ("",) * 7 + ("waiting for A/B",))
            continue
        A, B = read_votes(paths["A"], warn), read_votes(paths["B"], warn)
        has_c = os.path.exists(paths["C"])
        C = read_votes(paths["C"], warn) if has_c else {}
        ids = [m["id"] for m in meta]
        missing = [i for i in ids if i not in A or i not in B]
        if missing:
            warn.append(f"{name}: {len(missing)} items lack an A or B vote (skipped): {missing[:10]}")
        extra = (set(A) | set(B)) - set(ids)
        if extra:
            warn.append(f"{name}: {len(extra)} unknown ids in A/B output")
        both = [i for i in ids if i in A and i in B]
        pa = [A[i]["labels"][0] for i in both]
        pb = [B[i]["labels"][0] for i in both]
        pool_a += pa
        pool_b += pb
        n = len(both)
        agree_p = sum(x == y for x, y in zip(pa, pb)) / n if n else None
        agree_bin = sum((x == "none") == (y == "none") for x, y in zip(pa, pb)) / n if n else None
        agree_r = sum(A[i]["review"] == B[i]["review"] for i in both) / n if n else None
        kappa = cohen_kappa(pa, pb)
        disagree = [i for i in both if A[i]["labels"][0] != B[i]["labels"][0] or A[i]["review"] != B[i]["review"]]
        pending = [i for i in disagree if i not in C]
        n_adj = n_changed = 0
        bymeta = {m["id"]: m for m in meta}
        for i in both:
            m = bymeta[i]
            if i in disagree:
                if i not in C:
                    continue
                voters = [A[i], B[i], C[i]]
                label = majority([v["labels"][0] for v in voters], C[i]["labels"][0])
                review = majority([v["review"] for v in voters], C[i]["review"])
                adjudicated = True
                n_adj += 1
                n_changed += label != A[i]["labels"][0] or review != A[i]["review"]
            else:
                voters = [A[i], B[i]]
                label, review, adjudicated = A[i]["labels"][0], A[i]["review"], False
            labels = [label]
            if label != "none":
                extra_c = collections.Counter(c for v in voters for c in set(v["labels"]) if c not in ("none", label))
                labels += sorted((c for c, k in extra_c.items() if k * 2 > len(voters)),
                                 key=lambda c: (-extra_c[c], c))
            rows.append({"id": i, "dataset": m["dataset"], "session_id": m["session_id"], "turn": m["turn"],
                         "label": label, "labels": labels, "review": review,
                         "votes": [v["labels"][0] for v in voters],
                         "review_votes": [v["review"] for v in voters],
                         "adjudicated": adjudicated, "why": m["why"]})
        adj_path = os.path.join(bdir, name + ".adjudicate.txt")
        if pending:
            blocks = split_blocks(os.path.join(bdir, name + ".txt"))
            with open(adj_path, "w", encoding="utf-8") as f:
                for i in pending:
                    f.write(blocks[i] + "\n")
        status = ("C done" if not pending else "C partial, %d pending" % len(pending)) if has_c else \
            ("no disagreements" if not pending else "needs C: %d" % len(pending))
        table.append((name, n, pct(agree_p), pct(agree_bin), pct(agree_r),
                      "-" if kappa is None else f"{kappa:.3f}", len(disagree), n_adj, n_changed, status))

    rows.sort(key=lambda r: r["id"])
    with open(os.path.join(args.root, "labels.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            r = dict(r)
            r.pop("id")  # rows carry keys and labels only, no text
            f.write(json.dumps(r) + "\n")

    hdr = ("| batch | n (A&B) | primary % | homework-vs-none % | review % | Cohen's κ (primary) | "
           "A≠B (primary or review) | adjudicated by C | changed vs A | status |")
    lines = ["# Annotation agreement (A vs B)", "", hdr, "|" + "---|" * 10]
    for t in table:
        lines.append("| " + " | ".join(str(x) for x in t) + " |")
    if pool_a:
        n = len(pool_a)
        lines.append("| **all** | %d | %s | %s | | %.3f | | | | |" % (
            n, pct(sum(x == y for x, y in zip(pool_a, pool_b)) / n),
            pct(sum((x == "none") == (y == "none") for x, y in zip(pool_a, pool_b)) / n),
            cohen_kappa(pool_a, pool_b)))
    lines += ["", "labels.jsonl rows: %d (items waiting for C are not included)." % len(rows),
              "QA (senior pass over positives) is not applied here; record its changes separately."]
    if warn:
        lines += ["", "## Warnings", ""] + ["- " + w for w in warn]
    with open(os.path.join(args.root, "agreement.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
