"""How well the review rule (stream/review.py) works, on everything that can measure it. Prints JSON.

    python -m homework_monitor.training.review_rule [--data-dir ../shared/data] [--no-model]

1. **Labelled real turns** (training/labels/*.jsonl, the ``review`` flag of ANNOTATION.md; 3,360 turns,
   31 reviews). Their earlier sessions are not in the corpora, so the rule's overlap with the previous
   homework cannot run: measured are its two text-only parts, "asks about follow-through" alone and
   with "refers back to an earlier session". Part of the set was drawn by review wording (``why``), so
   the figures are given for that stratum and for the rest.
2. **Consecutive real sessions of one client** (training/labels/review_pairs.json): the whole rule,
   with the earlier session's homework as the annotators marked it (sessions_dev ``turns``) and as the
   served model finds it (the offline path, exactly what the worker would do).
3. **The demo's follow-up pairs** (producers/demo_sessions, EXPECTED.json): written for this project
   together with the rule, so an optimistic check, not evidence.
4. **Stranger's homework** (a false-alarm stress test): each real dev session (labeled/sessions_dev.jsonl)
   paired with the annotated homework of 5 other sessions drawn at random (seed 7). Such a session
   cannot review that homework, so a flagged session is a false alarm, unless the flagged turn reviews
   some earlier homework of its own (a turn labelled ``review`` is reported as such).

Turn-level figures count therapist turns; ambiguous turns (review_pairs.json) count neither way.
Session-level: does the session review the previous homework (the summary's previous_homework_reviewed).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

from homework_monitor.producers.replay import demo_sessions_dir, read_sessions
from homework_monitor.stream.config import Settings
from homework_monitor.stream.offline import session_utterances
from homework_monitor.stream.processor import window_config
from homework_monitor.stream.review import asks_about_follow_through, record_reviews, refers_back
from homework_monitor.stream.schemas import Assignment
from homework_monitor.stream.windowing import SessionState, window_session

from .data import ADDED_LABELS_DIR, corpus_paths, read_jsonl, utterance_examples

PAIRS = ADDED_LABELS_DIR / "review_pairs.json"


def prf(pred: Iterable[bool], truth: Iterable[bool]) -> dict:
    pairs = list(zip(pred, truth))
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    fn = sum(t and not p for p, t in pairs)
    return {"n": len(pairs), "positives": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None}


def _sessions(data_dir: Path, wanted: set[str]) -> dict[str, dict]:
    out = {}
    for path in corpus_paths(data_dir):
        for s in read_jsonl(path):
            if s["session_id"] in wanted:
                out[s["session_id"]] = s
    return out


def labelled_turns(data_dir: Path) -> dict:
    rows = [r for p in sorted(ADDED_LABELS_DIR.glob("*.jsonl")) for r in read_jsonl(p)]
    sessions = _sessions(data_dir, {r["session_id"] for r in rows})
    examples = {sid: utterance_examples(s) for sid, s in sessions.items()}
    items = [(r, examples[r["session_id"]][int(r["turn"])].therapist) for r in rows]
    out = {}
    for name, keep in (("all", lambda r: True), ("drawn_by_review_wording", lambda r: "review" in r["why"]),
                       ("other", lambda r: "review" not in r["why"])):
        sel = [(r, t) for r, t in items if keep(r)]
        truth = [bool(r["review"]) for r, _ in sel]
        out[name] = {"asks_about_follow_through": prf([asks_about_follow_through(t) for _, t in sel], truth),
                     "asks_and_refers_back": prf([asks_about_follow_through(t) and refers_back(t) for _, t in sel],
                                                 truth)}
    return out


def _gold_homework(session: dict, turns: Iterable[int]) -> list[Assignment]:
    utts = session_utterances(session)
    return [Assignment(turn=t, category="take_action", confidence=1.0, start_s=utts[t].start_s, quote=utts[t].text)
            for t in sorted(turns)]


def _rule_reviews(session: dict, previous: list[Assignment], settings: Settings) -> set[int]:
    _, mds = window_session(session_utterances(session), window_config(settings), session["session_id"])
    state = record_reviews(SessionState(session_id=session["session_id"], previous_homework=tuple(previous)), mds)
    return {r.turn for r in state.reviews}


def _score(found: dict[str, set[int]], labels: dict[str, set[int]], ambiguous: dict[str, set[int]],
           therapist_turns: dict[str, list[int]]) -> dict:
    pred, truth = [], []
    for sid, turns in therapist_turns.items():
        for t in turns:
            if t in ambiguous.get(sid, set()):
                continue
            pred.append(t in found[sid])
            truth.append(t in labels[sid])
    return {"turns": prf(pred, truth),
            "sessions": prf([bool(found[s]) for s in labels], [bool(labels[s]) for s in labels]),
            "per_session": {s: {"labelled": sorted(labels[s]), "found": sorted(found[s])} for s in labels}}


def _therapist_turns(session: dict) -> list[int]:
    return [u.seq for u in session_utterances(session) if u.speaker == "therapist"]


def _model_reviews(pairs: list[tuple[dict, dict]], settings: Settings) -> tuple[dict, dict]:
    """Each (previous, session) through the offline path as one client's two sessions: the served model
    finds the previous homework, the follow-up code carries it over, the rule reads the session."""
    import asyncio

    from homework_monitor.stream.classifiers import InProcessClassifier
    from homework_monitor.stream.offline import summarize_all, windowed_sessions

    classifier = InProcessClassifier(settings.artifact_dir)
    windowed = []
    for prev, session in pairs:
        client = {"client_id": f"pair-{session['session_id']}"}
        windowed.append(list(windowed_sessions([{**prev, "meta": client}, {**session, "meta": client}],
                                               window_config(settings))))

    async def classify_all():
        await classifier.start()
        try:
            return [await classifier.classify([md.example() for _, mds in w for md in mds]) for w in windowed]
        finally:
            await classifier.close()

    found, previous_found = {}, {}
    for (_, session), w, probs in zip(pairs, windowed, asyncio.run(classify_all())):
        first, second = summarize_all(w, probs, settings.event_threshold, classifier.model_version)
        found[session["session_id"]] = {r.turn for r in second.reviews}
        previous_found[session["session_id"]] = [a.turn for a in first.assignments]
    return found, previous_found


def real_pairs(data_dir: Path, settings: Settings, with_model: bool) -> dict:
    spec = json.loads(PAIRS.read_text())["pairs"]
    wanted = {p["previous"] for p in spec} | {p["session"] for p in spec}
    sessions = _sessions(data_dir, wanted)
    dev = {r["session_id"]: r for r in read_jsonl(data_dir / "labeled" / "sessions_dev.jsonl")}
    labels = {p["session"]: set(p["reviews"]) for p in spec}
    ambiguous = {p["session"]: set(p["ambiguous"]) for p in spec}
    turns = {p["session"]: _therapist_turns(sessions[p["session"]]) for p in spec}
    gold = {p["session"]: _rule_reviews(sessions[p["session"]],
                                        _gold_homework(sessions[p["previous"]], dev[p["previous"]]["turns"]), settings)
            for p in spec}
    out = {"previous_homework_as_annotated": _score(gold, labels, ambiguous, turns)}
    if with_model:
        found, prev_turns = _model_reviews([(sessions[p["previous"]], sessions[p["session"]]) for p in spec], settings)
        out["previous_homework_as_the_model_finds_it"] = _score(found, labels, ambiguous, turns)
        out["previous_homework_turns"] = {p["session"]: {"annotated": sorted(dev[p["previous"]]["turns"]),
                                                         "model": prev_turns[p["session"]]} for p in spec}
    return out


def demo_pairs(settings: Settings) -> dict:
    sessions = read_sessions([demo_sessions_dir()])
    expected = json.loads((demo_sessions_dir() / "EXPECTED.json").read_text())
    last: dict[str, dict] = {}
    found, labels, turns = {}, {}, {}
    for s in sessions:
        client = (s.get("meta") or {}).get("client_id")
        prev = last.get(client)
        last[client] = s
        if prev is None:
            continue
        sid = s["session_id"]
        homework = [x["turn"] for x in expected[prev["session_id"]] if "category" in x]
        found[sid] = _rule_reviews(s, _gold_homework(prev, homework), settings)
        labels[sid] = {x["turn"] for x in expected[sid] if x.get("review")}
        turns[sid] = _therapist_turns(s)
    return _score(found, labels, {}, turns)


def strangers_homework(data_dir: Path, settings: Settings, per_session: int = 5, seed: int = 7) -> dict:
    import random
    dev = list(read_jsonl(data_dir / "labeled" / "sessions_dev.jsonl"))
    second = {p["session"] for p in json.loads(PAIRS.read_text())["pairs"]}
    sessions = _sessions(data_dir, {r["session_id"] for r in dev})
    reviews = {(r["session_id"], int(r["turn"])) for p in sorted(ADDED_LABELS_DIR.glob("*.jsonl"))
               for r in read_jsonl(p) if r["review"]}
    donors = [r for r in dev if r["turns"]]
    rng = random.Random(seed)
    pairings = flagged = 0
    turns: set[tuple[str, int]] = set()
    for r in dev:
        if r["session_id"] in second:
            continue
        for d in rng.sample([x for x in donors if x["session_id"] != r["session_id"]], per_session):
            found = _rule_reviews(sessions[r["session_id"]], _gold_homework(sessions[d["session_id"]], d["turns"]),
                                  settings)
            pairings += 1
            flagged += bool(found)
            turns |= {(r["session_id"], t) for t in found}
    return {"pairings": pairings, "sessions_flagged": flagged, "flagged_rate": round(flagged / pairings, 3),
            "distinct_turns_flagged": len(turns), "of_which_labelled_review": len(turns & reviews)}


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=settings.data_dir)
    p.add_argument("--no-model", action="store_true", help="skip the served model (pairs with annotated homework only)")
    a = p.parse_args(argv)
    print(json.dumps({"labelled_real_turns": labelled_turns(a.data_dir),
                      "consecutive_real_sessions": real_pairs(a.data_dir, settings, not a.no_model),
                      "demo_follow_up_pairs": demo_pairs(settings),
                      "strangers_homework": strangers_homework(a.data_dir, settings)}, indent=2))


if __name__ == "__main__":
    main()
