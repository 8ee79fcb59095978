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

--round 1 (default): the 1,920 items of labels/clinical_2026-12.jsonl (ids a00001.., batch_01..16).
--round 2: candidates for the rare classes (practice, journal, learn) and review turns, see select_round2().
  Reproduce with --labels-dir pointing at a folder holding only clinical_2026-12.jsonl (the labels of that time).
--round 3: 240 learn/journal-vocabulary candidates (c-ids, batch_27..28), see select_round3(); run as
  --round 3 --exclude-batches /work/annot/batches --exclude-batches /work/annot2/batches --out /work/annot3/batches
"""
import argparse
import collections
import glob
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


# ---------------------------------------------------------------- round 2
# Round 2 targets the rare homework classes and review turns (round 1 found only 20-30 of each).
# Same unit and text/meta formats as round 1; ids continue the numbering with prefix "b"
# (b01921..), batch files continue at batch_17. Items are stratified by
# tier (clinical, then esconv/esconv_failed, then counselchat) x class x strength: a STRONG term is
# specific to the class ("journal", "breathing", "handout"); a WEAK term is generic ("try", "notes",
# "online") and is only used once the strong matches of the tier are used up. An item's class is the
# first class (R2_CLASSES order) with a strong match, else the first with a weak match, so the
# strata are disjoint. selection_summary.json holds pool and drawn counts per stratum (for reweighting).
R2_SEED = 72
R2_TIERS = (CLINICAL, ("esconv", "esconv_failed"), ("counselchat",))
R2_CLASSES = ("review", "journal", "learn", "practice")
R2_QUOTA = {"review": 150, "journal": 330, "learn": 330, "practice": 330}
R2_TOPUP_ORDER = ("learn", "practice", "journal", "review")  # who takes over a class's shortfall (rarest first)
R2_RANDOM = 60
R2_TOTAL = 1200
R2_MAX_PER_SESSION = 6
R2_MIN_WORDS = 6
R2_MAX_WORDS_COUNSELCHAT = 250
R2_ID_OFFSET = BATCH_SIZE * N_BATCHES     # round 1 used a00001..a01920
R2_BATCH_OFFSET = N_BATCHES               # round 1 used batch_01..batch_16
R2_VOCAB = {
    "review": (
        r"\bhow did (?:\w+\W+){0,8}?go\b|\bhow(?:'s| is| has| have| was)(?: \w+){1,6} (?:been )?(?:going|gone|working)\b(?! on)"
        r"|\bhow (?:are|were) things (?:going )?with\b|\bhow have you been (?:doing )?with\b"
        r"|\b(?:were|was) you able to\b|\bhave you been able to\b|\bwas it possible (?:for you )?to\b"
        r"|\b(?:did|have) you (?:get|got|had|have) (?:a )?chance\b|\bdid you (?:manage|get around|end up|get) to\b"
        r"|\bdid you (?:try|do|start|keep|write|read|call|talk|go|practi[cs]e|use|make|finish|look|fill)\b"
        r"|\bany luck\b|\blast (?:time|week|session|visit|appointment) (?:we|you|i)\b"
        r"|\byou (?:said|mentioned|told me) (?:the )?last (?:time|week|session)\b"
        r"|\bsince (?:we|our) (?:last )?(?:met|talked|spoke|session|meeting|visit)\b"
        r"|\bsince (?:the )?last (?:time|week|session|visit)\b|\bwhen we (?:last )?(?:met|talked|spoke)\b"
        r"|\bwe (?:talked|spoke) about last\b|\bat our last\b|\bthe (?:plan|goal)s? (?:we|you) (?:made|set|agreed|came up)"
        r"|\bfollow(?:ing|ed)? up on\b|\byou were going to\b|\b(?:the|your) homework\b",
        None),
    "journal": (
        r"\b(?:journal\w*|diar(?:y|ies)|log(?:s|ged|ging)?|logbook|jot\w*|note ?books?|worksheets?|thought records?"
        r"|gratitude (?:list|journal)s?|write (?:it|them|that|this|these|those|down|out|about|a|an|your|each|every|some|things)"
        r"|writing (?:down|it|them|things|out|about|a|your)"
        r"|keep(?:ing)? (?:a |an )?(?:track|log|record|list|note|notes|tally|count|chart)"
        r"|track (?:of|your|it|them|how|when|what|the|each)|tracking|tracker|list of|make (?:a |an )?list"
        r"|notes? (?:down|of)|(?:take|make|taking|making) (?:a )?notes?|record (?:your|it|them|how|when|what|each))\b",
        r"\b(?:(?<!you )write|writing|written|records?|recording|notes?|lists?|tally|chart\w*|monitor\w*|calendar|planner"
        r"|notic(?:e|ing) (?:when|how|what|the|your|if|any|each)|pay(?:ing)? (?:close )?attention to"
        r"|keep(?:ing)? an eye on)\b"),
    "learn": (
        r"\b(?:books?|booklets?|workbooks?|articles?|handouts?|pamphlets?|brochures?|leaflets?|websites?|web ?sites?|apps?"
        r"|videos?|podcasts?|audiobooks?|ted talks?|youtube|google|self-help|look (?:it |them |that |this )?up"
        r"|looking (?:it )?up|look(?:ing)? into|read (?:up|about|more|a|an|the|this|that|some|through|over)"
        r"|learn(?:ing)? (?:more|about|how))\b",
        r"\b(?:read|reading|materials?|class(?:es)?|(?<!of )courses?|workshops?|learn\w*"
        r"|research\w*|resources?)\b"),
    "practice": (
        r"\b(?:practi[cs](?:e|es|ed|ing)|breath\w*|relax(?:ing|ation)?|meditat\w*|mindful\w*|grounding|visuali[sz]\w*|affirmations?"
        r"|coping (?:skills?|strateg\w*|statements?|techniques?|mechanisms?|tools?)|self[- ]talk|rehears\w*"
        r"|role[- ]?play\w*|yoga)\b",
        r"\b(?:try|exercis\w*|skills?|techniques?|strateg\w*|cop(?:e|ing)|distract\w*|self[- ]care)\b"),
}
R2_RX = {c: tuple(re.compile(p, re.I) if p else None for p in pats) for c, pats in R2_VOCAB.items()}


def vocab_class_r2(text):
    """(class, "strong" | "weak") of the first class with a strong match, else the first with a weak one."""
    for strength, k in (("strong", 0), ("weak", 1)):
        for c in R2_CLASSES:
            rx = R2_RX[c][k]
            if rx is not None and rx.search(text):
                return c, strength
    return None, None


def deal_batches(selected, n_batches, rng):
    """stratified deal into n_batches (each batch gets its share of every why x dataset), then shuffle each."""
    rng.shuffle(selected)
    selected.sort(key=lambda it: (it["why"], it["dataset"]))
    batches = [[] for _ in range(n_batches)]
    for k, it in enumerate(selected):
        batches[k % n_batches].append(it)
    for b in batches:
        rng.shuffle(b)
    return batches


def write_batches(out, batches, batch_offset, id_prefix, id_offset, get_md):
    """batch_NN.txt (annotator view) + batch_NN.meta.jsonl; numbers batches and ids after the offsets."""
    os.makedirs(out, exist_ok=True)
    n = id_offset
    for bi, b in enumerate(batches, batch_offset + 1):
        with open(os.path.join(out, "batch_%02d.txt" % bi), "w", encoding="utf-8") as ft, \
             open(os.path.join(out, "batch_%02d.meta.jsonl" % bi), "w", encoding="utf-8") as fm:
            for it in b:
                n += 1
                it["id"] = "%s%05d" % (id_prefix, n)
                ft.write(render(it["id"], get_md(it["dataset"], it["session_id"])[it["turn"]]) + "\n")
                fm.write(json.dumps({k: it[k] for k in ("id", "dataset", "session_id", "turn", "why")}) + "\n")


def largest_remainder(total, weights):
    s = sum(weights)
    if s == 0:
        return [0] * len(weights)
    raw = [total * w / s for w in weights]
    out = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))[:total - sum(out)]:
        out[i] += 1
    return out


def select_round2(args):
    rng = random.Random(R2_SEED)
    names = tuple(ds for tier in R2_TIERS for ds in tier)
    corpora = {n: load_sessions(n) for n in names}
    check = verify(corpora)

    # keys already labelled: real_dev + every labels/*.jsonl of the project
    taken = {(r["dataset"], r["session_id"], r["turn"])
             for r in read_jsonl(os.path.join(DATA, "labeled", "real_dev.jsonl"))}
    label_files = sorted(glob.glob(os.path.join(args.labels_dir, "*.jsonl")))
    if not label_files:
        raise SystemExit("no labels/*.jsonl under %s (--labels-dir)" % args.labels_dir)
    n_real = len(taken)
    for path in label_files:
        taken |= {(r["dataset"], r["session_id"], r["turn"]) for r in read_jsonl(path)}
    sdev_ids = {s["session_id"] for s in read_jsonl(os.path.join(DATA, "labeled", "sessions_dev.jsonl"))}
    # hlqc copies of AnnoMI videos: AnnoMI itself is drawn from, so the copies would be near-duplicate items
    dup_ids = {k for k, s in corpora["hlqc"].items() if (s.get("meta") or {}).get("dup_of_annomi")}

    mds = {}

    def get_md(ds, sid):
        if (ds, sid) not in mds:
            mds[(ds, sid)] = microdialogues(corpora[ds][sid])
        return mds[(ds, sid)]

    # candidate strata: (class, tier, strength) -> keys; "random" = no vocabulary match at all
    notes = collections.Counter()
    strata = collections.defaultdict(list)
    for ti, tier in enumerate(R2_TIERS):
        for ds in tier:
            for sid in sorted(corpora[ds]):
                if sid in dup_ids:
                    continue
                for t, md in sorted(get_md(ds, sid).items()):
                    if (ds, sid, t) in taken:
                        notes["excluded_already_labelled"] += 1
                        continue
                    n_words = len(md["therapist"].split())
                    if n_words < R2_MIN_WORDS:
                        notes["skipped_under_%d_words" % R2_MIN_WORDS] += 1
                        continue
                    if ds == "counselchat" and n_words > R2_MAX_WORDS_COUNSELCHAT:
                        notes["skipped_counselchat_over_%d_words" % R2_MAX_WORDS_COUNSELCHAT] += 1
                        continue
                    cls, strength = vocab_class_r2(md["therapist"])
                    strata[(cls or "random", ti, strength or "-")].append((ds, sid, t))
    for k in sorted(strata):
        rng.shuffle(strata[k])
    # per class: clinical strong, clinical weak, esconv strong, esconv weak, counselchat strong, counselchat weak
    queues = {c: collections.deque((k, key) for k in sorted((k for k in strata if k[0] == c),
                                                          key=lambda k: (k[1], k[2] != "strong"))
                                   for key in strata[k]) for c in R2_CLASSES}

    selected, chosen, seen_text = [], set(), set()
    per_session = collections.Counter()
    drawn = collections.Counter()

    def add(stratum, key, why):
        ds, sid, t = key
        if key in chosen:
            return False
        if per_session[(ds, sid)] >= R2_MAX_PER_SESSION:
            notes["skipped_session_cap"] += 1
            return False
        text = get_md(ds, sid)[t]["therapist"].lower()
        if text in seen_text:  # e.g. one counselchat answer posted under several questions
            notes["skipped_duplicate_text"] += 1
            return False
        chosen.add(key)
        seen_text.add(text)
        per_session[(ds, sid)] += 1
        drawn[stratum] += 1
        selected.append({"dataset": ds, "session_id": sid, "turn": t, "why": why})
        return True

    def take(cls, n):
        """add up to n items of cls from its queue (in order); returns how many were added."""
        got, q = 0, queues[cls]
        while got < n and q:
            stratum, key = q.popleft()
            got += add(stratum, key, "r2_vocab_" + cls)
        return got

    # 1. vocabulary quotas, rarest pools first so that the session cap does not crowd them out
    for c in R2_CLASSES:
        take(c, R2_QUOTA[c])
    # 2. shortfalls (small review/journal pools) go to the other classes, one item at a time
    topup = collections.Counter()
    need = R2_TOTAL - R2_RANDOM - len(selected)
    while need > 0 and any(queues[c] for c in R2_TOPUP_ORDER):
        for c in R2_TOPUP_ORDER:
            if need > 0 and take(c, 1):
                topup[c] += 1
                need -= 1
    # 3. random turns without any vocabulary match, spread over the tiers like the vocabulary items
    tier_of = {ds: ti for ti, tier in enumerate(R2_TIERS) for ds in tier}
    n_vocab_tier = collections.Counter(tier_of[it["dataset"]] for it in selected)
    alloc = largest_remainder(R2_TOTAL - len(selected), [n_vocab_tier[ti] for ti in range(len(R2_TIERS))])
    rand_q = {ti: collections.deque(strata.get(("random", ti, "-"), [])) for ti in range(len(R2_TIERS))}
    for ti in range(len(R2_TIERS)):
        while alloc[ti] > 0 and rand_q[ti]:
            alloc[ti] -= add(("random", ti, "-"), rand_q[ti].popleft(), "r2_random")
    for ti in range(len(R2_TIERS)):  # a tier short of random turns: the next tiers fill in
        while len(selected) < R2_TOTAL and rand_q[ti]:
            add(("random", ti, "-"), rand_q[ti].popleft(), "r2_random")

    n_batches = -(-len(selected) // BATCH_SIZE)
    batches = deal_batches(selected, n_batches, rng)
    write_batches(args.out, batches, R2_BATCH_OFFSET, "b", R2_ID_OFFSET, get_md)

    allit = [it for b in batches for it in b]

    def skey(k):
        return "{}|{}|{}".format(k[0], "+".join(R2_TIERS[k[1]]), k[2])

    summary = {
        "round": 2, "seed": R2_SEED, "n_items": len(allit), "n_batches": n_batches, "batch_size": BATCH_SIZE,
        "ids": [allit[0]["id"], allit[-1]["id"]] if allit else [],
        "batch_files": ["batch_%02d" % (R2_BATCH_OFFSET + 1), "batch_%02d" % (R2_BATCH_OFFSET + n_batches)],
        "definition_check": check,
        "quota": dict(R2_QUOTA, random=R2_RANDOM, total=R2_TOTAL), "topup_over_quota": dict(topup),
        "per_why": dict(collections.Counter(it["why"] for it in allit)),
        "per_dataset": dict(collections.Counter(it["dataset"] for it in allit)),
        "per_why_dataset": {"{}|{}".format(*k): v for k, v in
                            sorted(collections.Counter((it["why"], it["dataset"]) for it in allit).items())},
        # stratum = class|tier|strength: pool size and items drawn (inclusion rate = drawn / pool)
        "strata_pool": {skey(k): len(v) for k, v in sorted(strata.items())},
        "strata_drawn": {skey(k): v for k, v in sorted(drawn.items())},
        "clinical_items": sum(it["dataset"] in CLINICAL for it in allit),
        "items_in_sessions_dev_sessions": sum(it["session_id"] in sdev_ids for it in allit),
        "max_items_per_session": max(per_session.values()) if per_session else 0,
        "excluded_keys": {"real_dev": n_real, "labels_files": [os.path.basename(p) for p in label_files],
                          "all": len(taken)},
        "excluded_hlqc_dup_of_annomi_sessions": len(dup_ids),
        "notes": dict(notes),
        "per_batch_why": [dict(collections.Counter(it["why"] for it in b)) for b in batches],
    }
    with open(os.path.join(args.out, "selection_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("per_batch_why", "definition_check", "strata_pool", "strata_drawn")}, indent=1))


# ---------------------------------------------------------------- round 3
# Round 3 is a small top-up for the two classes still short of 150 real items after round 2
# (learn 121, journal 137): 240 items (batch_27..28, ids c03121..) of therapist utterances that match
# the round-2 journal or learn vocabulary (R2_VOCAB; review/practice wording is ignored here). Sources in
# tier order: CounselChat answers (<= 250 words; the client question is the context), ESConv, then any
# clinical matches left. Class = first of R3_CLASSES with a strong match, else the first with a weak
# match; per class, strong strata of every tier are drawn before any weak stratum. Excluded: real_dev,
# every labels/*.jsonl, the keys of any --exclude-batches *.meta.jsonl, and therapist texts equal to an
# excluded item's text (the same CounselChat answer is often posted under several questions).
# A class whose pool runs out hands its shortfall to the other (R3_TOPUP_ORDER).
R3_SEED = 73
R3_TIERS = (("counselchat",), ("esconv", "esconv_failed"), CLINICAL)
R3_CLASSES = ("journal", "learn")
R3_QUOTA = {"journal": 90, "learn": 150}
R3_TOPUP_ORDER = ("journal", "learn")
R3_TOTAL = 240
R3_MAX_PER_SESSION = 4
R3_MIN_WORDS = 6
R3_MAX_WORDS_COUNSELCHAT = 250
R3_ID_OFFSET = R2_ID_OFFSET + R2_TOTAL          # round 2 used b01921..b03120
R3_BATCH_OFFSET = R2_BATCH_OFFSET + R2_TOTAL // BATCH_SIZE   # round 2 used batch_17..batch_26


def vocab_class_r3(text):
    """(class, "strong" | "weak") over R3_CLASSES only, strong matches first."""
    for strength, k in (("strong", 0), ("weak", 1)):
        for c in R3_CLASSES:
            if R2_RX[c][k].search(text):
                return c, strength
    return None, None


def select_round3(args):
    rng = random.Random(R3_SEED)
    names = tuple(ds for tier in R3_TIERS for ds in tier)
    corpora = {n: load_sessions(n) for n in names}
    check = verify(corpora)

    real = read_jsonl(os.path.join(DATA, "labeled", "real_dev.jsonl"))
    taken = {(r["dataset"], r["session_id"], r["turn"]) for r in real}
    n_real = len(taken)
    label_files = sorted(glob.glob(os.path.join(args.labels_dir, "*.jsonl")))
    if not label_files:
        raise SystemExit("no labels/*.jsonl under %s (--labels-dir)" % args.labels_dir)
    label_keys = set()
    for path in label_files:
        label_keys |= {(r["dataset"], r["session_id"], r["turn"]) for r in read_jsonl(path)}
    taken |= label_keys
    meta_files = sorted(p for d in args.exclude_batches for p in glob.glob(os.path.join(d, "*.meta.jsonl")))
    if args.exclude_batches and not meta_files:
        raise SystemExit("no *.meta.jsonl under %s (--exclude-batches)" % ", ".join(args.exclude_batches))
    batch_keys = set()
    for path in meta_files:
        batch_keys |= {(r["dataset"], r["session_id"], r["turn"]) for r in read_jsonl(path)}
    taken |= batch_keys
    sdev_ids = {s["session_id"] for s in read_jsonl(os.path.join(DATA, "labeled", "sessions_dev.jsonl"))}
    dup_ids = {k for k, s in corpora["hlqc"].items() if (s.get("meta") or {}).get("dup_of_annomi")}

    mds = {}

    def get_md(ds, sid):
        if (ds, sid) not in mds:
            mds[(ds, sid)] = microdialogues(corpora[ds][sid])
        return mds[(ds, sid)]

    # therapist texts already labelled or in an earlier batch (keys of corpora not loaded here are skipped)
    taken_text = set()
    for ds, sid, t in taken:
        md = get_md(ds, sid).get(t) if ds in corpora and sid in corpora[ds] else None
        if md is not None:
            taken_text.add(md["therapist"].lower())

    notes = collections.Counter()
    strata = collections.defaultdict(list)
    for ti, tier in enumerate(R3_TIERS):
        for ds in tier:
            for sid in sorted(corpora[ds]):
                if sid in dup_ids:
                    continue
                for t, md in sorted(get_md(ds, sid).items()):
                    if (ds, sid, t) in taken:
                        notes["excluded_already_labelled_or_batched"] += 1
                        continue
                    n_words = len(md["therapist"].split())
                    if n_words < R3_MIN_WORDS:
                        notes["skipped_under_%d_words" % R3_MIN_WORDS] += 1
                        continue
                    if ds == "counselchat" and n_words > R3_MAX_WORDS_COUNSELCHAT:
                        notes["skipped_counselchat_over_%d_words" % R3_MAX_WORDS_COUNSELCHAT] += 1
                        continue
                    cls, strength = vocab_class_r3(md["therapist"])
                    if cls is not None:
                        strata[(cls, ti, strength)].append((ds, sid, t))
    for k in sorted(strata):
        rng.shuffle(strata[k])
    # per class: strong of every tier (counselchat, esconv, clinical), then weak of every tier
    queues = {c: collections.deque((k, key) for k in sorted((k for k in strata if k[0] == c),
                                                          key=lambda k: (k[2] != "strong", k[1]))
                                   for key in strata[k]) for c in R3_CLASSES}

    selected, chosen, seen_text = [], set(), set()
    per_session = collections.Counter()
    drawn = collections.Counter()

    def add(stratum, key, why):
        ds, sid, t = key
        if key in chosen:
            return False
        if per_session[(ds, sid)] >= R3_MAX_PER_SESSION:
            notes["skipped_session_cap"] += 1
            return False
        text = get_md(ds, sid)[t]["therapist"].lower()
        if text in taken_text:
            notes["skipped_text_already_labelled_or_batched"] += 1
            return False
        if text in seen_text:
            notes["skipped_duplicate_text"] += 1
            return False
        chosen.add(key)
        seen_text.add(text)
        per_session[(ds, sid)] += 1
        drawn[stratum] += 1
        selected.append({"dataset": ds, "session_id": sid, "turn": t, "why": why})
        return True

    def take(cls, n):
        got, q = 0, queues[cls]
        while got < n and q:
            stratum, key = q.popleft()
            got += add(stratum, key, "r3_vocab_" + cls)
        return got

    for c in R3_CLASSES:
        take(c, R3_QUOTA[c])
    topup = collections.Counter()
    need = R3_TOTAL - len(selected)
    while need > 0 and any(queues[c] for c in R3_TOPUP_ORDER):
        for c in R3_TOPUP_ORDER:
            if need > 0 and take(c, 1):
                topup[c] += 1
                need -= 1

    n_batches = -(-len(selected) // BATCH_SIZE)
    batches = deal_batches(selected, n_batches, rng)
    write_batches(args.out, batches, R3_BATCH_OFFSET, "c", R3_ID_OFFSET, get_md)

    allit = [it for b in batches for it in b]

    def skey(k):
        return "{}|{}|{}".format(k[0], "+".join(R3_TIERS[k[1]]), k[2])

    summary = {
        "round": 3, "seed": R3_SEED, "n_items": len(allit), "n_batches": n_batches, "batch_size": BATCH_SIZE,
        "ids": [allit[0]["id"], allit[-1]["id"]] if allit else [],
        "batch_files": ["batch_%02d" % (R3_BATCH_OFFSET + 1), "batch_%02d" % (R3_BATCH_OFFSET + n_batches)],
        "definition_check": check,
        "quota": dict(R3_QUOTA, total=R3_TOTAL), "topup_over_quota": dict(topup),
        "per_why": dict(collections.Counter(it["why"] for it in allit)),
        "per_dataset": dict(collections.Counter(it["dataset"] for it in allit)),
        "per_why_dataset": {"{}|{}".format(*k): v for k, v in
                            sorted(collections.Counter((it["why"], it["dataset"]) for it in allit).items())},
        # stratum = class|tier|strength: pool size and items drawn (inclusion rate = drawn / pool)
        "strata_pool": {skey(k): len(v) for k, v in sorted(strata.items())},
        "strata_drawn": {skey(k): v for k, v in sorted(drawn.items())},
        "clinical_items": sum(it["dataset"] in CLINICAL for it in allit),
        "items_in_sessions_dev_sessions": sum(it["session_id"] in sdev_ids for it in allit),
        "max_items_per_session": max(per_session.values()) if per_session else 0,
        "excluded_keys": {"real_dev": n_real, "labels_files": [os.path.basename(p) for p in label_files],
                          "labels": len(label_keys), "batch_meta_files": len(meta_files),
                          "batch_keys": len(batch_keys), "batch_keys_not_in_labels": len(batch_keys - label_keys),
                          "all": len(taken)},
        "excluded_hlqc_dup_of_annomi_sessions": len(dup_ids),
        "notes": dict(notes),
        "per_batch_why": [dict(collections.Counter(it["why"] for it in b)) for b in batches],
    }
    with open(os.path.join(args.out, "selection_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("per_batch_why", "definition_check", "strata_pool", "strata_drawn")}, indent=1))


# ---------------------------------------------------------------- selection
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="batch folder, outside the repository (it holds corpus text)")
    ap.add_argument("--verify-only", action="store_true")
    ap.add_argument("--round", type=int, choices=(1, 2, 3), default=1,
                    help="1: the round-1 batches (a-ids); 2: rare-class/review candidates (b-ids); "
                         "3: learn/journal top-up (c-ids)")
    ap.add_argument("--labels-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "labels"),
                    help="rounds 2-3: keys in its *.jsonl files are excluded (as are real_dev keys)")
    ap.add_argument("--exclude-batches", action="append", default=[], metavar="DIR",
                    help="round 3 (repeatable): keys in DIR/*.meta.jsonl (earlier batches) are excluded too")
    args = ap.parse_args()
    if args.round == 2 and not args.verify_only:
        return select_round2(args)
    if args.round == 3 and not args.verify_only:
        return select_round3(args)
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
