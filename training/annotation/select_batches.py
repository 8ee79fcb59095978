#!/usr/bin/env python3
"""Select new microdialogues for annotation and write blind batches (stdlib only, deterministic).

Outputs (under --out, --out, outside the repository):
  batch_NN.txt         items in the ANNOTATION.md text format (no labels, no selection reason)
  batch_NN.meta.jsonl  {id, dataset, session_id, turn, why} per item (never shown to annotators)
  selection_summary.json  counts per why / dataset / batch and the definition check

Microdialogue definition (verified on labeled/real_dev.jsonl, see verify()):
  keep utterances with speaker therapist/client, index them 0..n-1 (seq); empty text -> "…".
  UTTERANCE LEVEL, NO MERGING: real_dev reproduces 1169/1169 exactly this way, while merging
  consecutive same-speaker utterances reproduces only ~62% (it changes esconv items).
  item key = (dataset, session_id, turn), turn = seq of the target therapist utterance;
  CONTEXT = up to 3 utterances before it; TARGET CLIENT = next utterance if it is the client's;
  AFTER = the 1 utterance after the client reply (or right after the therapist one when there is none).
  Set MERGE = True to use the merged-turn variant (turn id = seq of its first utterance).
"""
import argparse
import collections
import json
import os
import random
import re

DATA = os.environ.get("HWM_DATA_DIR", os.path.join("..", "shared", "data"))
SEED = 7
BATCH_SIZE = 120
N_BATCHES = 16            # 16 x 120 = 1920 items
MAX_PER_SESSION = 12      # cap for everything except sessions_dev positives
MIN_WORDS = 4
CLINICAL = ("annomi", "hlqc", "mibot", "pa_counseling")
ESCONV_QUOTA = {"review": 20, "journal": 30, "learn": 30, "practice": 30, "change_question": 10}
ESCONV_RANDOM = 40        # esconv total <= 160 (brief: <= 200)
MERGE = False

# Vocabulary strata. An item's stratum is the FIRST class that matches (order = priority),
# so strata are disjoint and `why` can be used for reweighting.
VOCAB = [
    ("review", r"how did (?:\w+\W+){0,8}?go\b|how(?:'s| is| has)(?: \w+){1,6} (?:been )?going|were you able to"
               r"|was it possible to|did you (?:get|have) (?:a )?chance|did you (?:manage|get around) to"
               r"|did you (?:end up|try|do|start|keep|write|read|call|talk|go)\b"
               r"|last (?:time|week|session|visit) (?:we|you|i)\b|(?:since|when) we (?:last )?(?:met|talked|spoke)"
               r"|we (?:talked|spoke) about last"),
    ("journal", r"\b(?:journal\w*|diar(?:y|ies)|log(?:s|ged|ging)?|track(?:s|ed|ing)?|record(?:s|ed|ing)?|write"
                r"|writing|wrote|written|jot\w*|note ?book|keep (?:a|an|some) (?:list|note|notes|count|record|tally|chart)"
                r"|make (?:a|an) list|(?:note|notes) (?:of|down)|monitor\w*|count(?:ing)? (?:how|the|your))\b"),
    ("learn", r"\b(?:read|reading|book|books|booklet|handout|pamphlet|brochure|leaflet|flyer|website|web ?site"
              r"|online|internet|app|apps|video|videos|podcast|learn\w*|look (?:up|into)|looking (?:up|into)"
              r"|research\w*|information|material|resources?)\b"),
    ("change_question", r"what would (?:\w+\W+){0,10}?look like|how might you|what might you|what could you"
                        r"|how could you|how would you (?:go about|do|handle|start)"
                        r"|what (?:do you think )?(?:would|could) (?:be|help)|what are some (?:things|ways|steps)"
                        r"|what (?:steps|changes) (?:could|would|might|can)"),
    ("practice", r"\b(?:practi[cs]\w*|try|trying|tried|exercis\w*|breath\w*|relax\w*|mindful\w*|meditat\w*"
                 r"|skill\w*|techniques?|strateg\w*|cop(?:e|ing)|rehears\w*|visuali[sz]\w*|grounding|role ?play)\b"),
]
VOCAB_RX = [(c, re.compile(p, re.I)) for c, p in VOCAB]


def vocab_class(text):
    for c, rx in VOCAB_RX:
        if rx.search(text):
            return c
    return None


# ---------------------------------------------------------------- microdialogues
def load_sessions(name):
    out = {}
    with open(os.path.join(DATA, "corpora", name, "sessions.jsonl"), encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            out[s["session_id"]] = s
    return out


def build_turns(session, merge=MERGE):
    utts = [u for u in session["utterances"] if u.get("speaker") in ("therapist", "client")]
    turns = []
    for seq, u in enumerate(utts):
        text = " ".join((u.get("text") or "").split()) or "…"
        if merge and turns and turns[-1]["speaker"] == u["speaker"]:
            turns[-1]["text"] += " " + text
        else:
            turns.append({"id": seq, "speaker": u["speaker"], "text": text})
    return turns


def microdialogues(session, merge=MERGE):
    """dict turn -> microdialogue, one per therapist turn."""
    turns = build_turns(session, merge)
    out = {}
    for i, t in enumerate(turns):
        if t["speaker"] != "therapist":
            continue
        client, j = None, i + 1
        if j < len(turns) and turns[j]["speaker"] == "client":
            client, j = turns[j]["text"], j + 1
        out[t["id"]] = {
            "turn": t["id"],
            "context": [{"speaker": c["speaker"], "text": c["text"]} for c in turns[max(0, i - 3):i]],
            "therapist": t["text"], "client": client,
            "after": [{"speaker": c["speaker"], "text": c["text"]} for c in turns[j:j + 1]],
        }
    return out


def render(item_id, md):
    lines = ["### " + item_id]
    lines += ["CONTEXT {}: {}".format(c["speaker"].upper(), c["text"]) for c in md["context"]]
    lines.append(">>> TARGET THERAPIST: " + md["therapist"])
    lines.append(">>> TARGET CLIENT: " + (md["client"] if md["client"] is not None else "(no reply)"))
    lines += ["AFTER {}: {}".format(c["speaker"].upper(), c["text"]) for c in md["after"]]
    return "\n".join(lines) + "\n"


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- verification
def verify(corpora):
    real = read_jsonl(os.path.join(DATA, "labeled", "real_dev.jsonl"))
    res = {}
    for merge in (False, True):
        c = collections.Counter()
        for r in real:
            md = microdialogues(corpora[r["dataset"]][r["session_id"]], merge).get(r["turn"])
            if md is None:
                c["turn_not_a_therapist_turn"] += 1
                continue
            tc = md["therapist"] == r["therapist"] and md["client"] == r["client"]
            allf = tc and md["context"] == r["context"] and md["after"] == r["after"]
            c["turn+therapist+client"] += tc
            c["all_fields"] += allf
        res["merged" if merge else "utterance_level"] = dict(c, n=len(real))
    sdev = read_jsonl(os.path.join(DATA, "labeled", "sessions_dev.jsonl"))
    c = collections.Counter()
    for s in sdev:
        ds = s["session_id"].split("-")[0]
        utts = [u for u in corpora[ds][s["session_id"]]["utterances"] if u["speaker"] in ("therapist", "client")]
        for t in s["turns_any"]:
            c["n"] += 1
            c["utt_index_is_therapist"] += t < len(utts) and utts[t]["speaker"] == "therapist"
    res["sessions_dev_turns_any"] = dict(c)
    return res


# ---------------------------------------------------------------- selection
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="batch folder, outside the repository (it holds corpus text)")
    ap.add_argument("--verify-only", action="store_true")
    args = ap.parse_args()
    rng = random.Random(SEED)

    names = CLINICAL + ("esconv", "esconv_failed")
    corpora = {n: load_sessions(n) for n in names}
    check = verify(corpora)
    print(json.dumps(check, indent=1))
    if args.verify_only:
        return

    real = read_jsonl(os.path.join(DATA, "labeled", "real_dev.jsonl"))
    taken = {(r["dataset"], r["session_id"], r["turn"]) for r in real}
    sdev = read_jsonl(os.path.join(DATA, "labeled", "sessions_dev.jsonl"))
    sdev_ids = {s["session_id"] for s in sdev}
    # hlqc sessions that duplicate an AnnoMI video (all duplicates point to sessions_dev sessions)
    dup_ids = {k for k, s in corpora["hlqc"].items() if (s.get("meta") or {}).get("dup_of_annomi")}
    mds = {}  # (dataset, session_id) -> {turn: md}

    def get_md(ds, sid):
        if (ds, sid) not in mds:
            mds[(ds, sid)] = microdialogues(corpora[ds][sid])
        return mds[(ds, sid)]

    selected, chosen = [], set()
    per_session = collections.Counter()
    notes = collections.Counter()

    def add(ds, sid, turn, why, capped=True):
        key = (ds, sid, turn)
        if key in chosen or key in taken:
            return False
        if capped and per_session[(ds, sid)] >= MAX_PER_SESSION:
            notes["skipped_session_cap"] += 1
            return False
        chosen.add(key)
        per_session[(ds, sid)] += 1
        selected.append({"dataset": ds, "session_id": sid, "turn": turn, "why": why})
        return True

    # 1. sessions_dev positives (either annotator), not in real_dev
    for s in sdev:
        ds = s["session_id"].split("-")[0]
        md = get_md(ds, s["session_id"])
        for t in sorted(s["turns_any"]):
            if (ds, s["session_id"], t) in taken:
                notes["sdev_positive_already_in_real_dev"] += 1
            elif t not in md:
                notes["sdev_positive_not_a_therapist_utterance"] += 1
            else:
                add(ds, s["session_id"], t, "sessions_dev_positive", capped=False)

    # candidate pools: therapist turns >= MIN_WORDS words, not in real_dev
    def pool(datasets):
        strata = collections.defaultdict(list)
        for ds in datasets:
            for sid in sorted(corpora[ds]):
                if sid in sdev_ids or sid in dup_ids:
                    continue
                for t, md in sorted(get_md(ds, sid).items()):
                    if (ds, sid, t) in taken or len(md["therapist"].split()) < MIN_WORDS:
                        continue
                    strata[vocab_class(md["therapist"]) or "random"].append((ds, sid, t))
        for v in strata.values():
            rng.shuffle(v)
        return strata

    # 2.+3. clinical: all vocab hits (rarest strata first, so the cap does not crowd them out), then random
    n_total = BATCH_SIZE * N_BATCHES
    n_esconv = sum(ESCONV_QUOTA.values()) + ESCONV_RANDOM
    clin = pool(CLINICAL)
    for cls in ("review", "journal", "learn", "change_question", "practice"):
        for ds, sid, t in clin.get(cls, []):
            add(ds, sid, t, "vocab_" + cls)
    n_clin_random = n_total - n_esconv - len(selected)
    for ds, sid, t in clin["random"]:
        if n_clin_random <= 0:
            break
        if add(ds, sid, t, "random_clinical"):
            n_clin_random -= 1
    # 4. esconv: vocab quotas + random, filling any shortfall so that the batches are full
    esc = pool(("esconv",))
    for cls, q in ESCONV_QUOTA.items():
        for ds, sid, t in esc.get(cls, [])[:q]:
            add(ds, sid, t, "vocab_" + cls)
    for ds, sid, t in esc["random"]:
        if len(selected) >= n_total:
            break
        add(ds, sid, t, "random_esconv")
    selected = selected[:n_total]
    n_batches = len(selected) // BATCH_SIZE
    selected = selected[:n_batches * BATCH_SIZE]

    # stratified deal into batches (each batch gets its share of every why x dataset), then shuffle
    rng.shuffle(selected)
    selected.sort(key=lambda it: (it["why"], it["dataset"]))
    batches = [[] for _ in range(n_batches)]
    for k, it in enumerate(selected):
        batches[k % n_batches].append(it)
    for b in batches:
        rng.shuffle(b)

    os.makedirs(args.out, exist_ok=True)
    n = 0
    for bi, b in enumerate(batches, 1):
        with open(os.path.join(args.out, "batch_%02d.txt" % bi), "w", encoding="utf-8") as ft, \
             open(os.path.join(args.out, "batch_%02d.meta.jsonl" % bi), "w", encoding="utf-8") as fm:
            for it in b:
                n += 1
                it["id"] = "a%05d" % n
                ft.write(render(it["id"], get_md(it["dataset"], it["session_id"])[it["turn"]]) + "\n")
                fm.write(json.dumps({k: it[k] for k in ("id", "dataset", "session_id", "turn", "why")}) + "\n")

    allit = [it for b in batches for it in b]
    summary = {
        "seed": SEED, "n_items": len(allit), "n_batches": n_batches, "batch_size": BATCH_SIZE,
        "definition_check": check,
        "per_why": dict(collections.Counter(it["why"] for it in allit)),
        "per_dataset": dict(collections.Counter(it["dataset"] for it in allit)),
        "per_why_dataset": {"{}|{}".format(*k): v for k, v in
                            sorted(collections.Counter((it["why"], it["dataset"]) for it in allit).items())},
        "clinical_items": sum(it["dataset"] in CLINICAL for it in allit),
        "max_items_per_session_capped": max(per_session[(it["dataset"], it["session_id"])]
                                            for it in allit if it["why"] != "sessions_dev_positive"),
        "excluded_hlqc_dup_of_annomi_sessions": len(dup_ids),
        "notes": dict(notes),
        "per_batch_why": [dict(collections.Counter(it["why"] for it in b)) for b in batches],
    }
    with open(os.path.join(args.out, "selection_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("per_batch_why", "definition_check")}, indent=1))


if __name__ == "__main__":
    main()
