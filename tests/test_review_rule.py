"""The review rule (stream/review.py): does a therapist turn review the previous session's homework?

Unit cases are lines written for these tests; the last tests run the rule over the demo's follow-up
pairs (producers/demo_sessions, EXPECTED.json review entries). Its measured quality on real sessions is
in docs/NUDGES.md (``python -m homework_monitor.training.review_rule``).
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from homework_monitor.producers.replay import demo_sessions_dir, read_sessions
from homework_monitor.stream.offline import session_utterances
from homework_monitor.stream.review import (
    asks_about_follow_through,
    content_words,
    record_reviews,
    review_of,
    rule_reviews,
)
from homework_monitor.stream.schemas import Assignment
from homework_monitor.stream.windowing import Microdialogue, SessionState, WindowConfig, WindowTurn, window_session

DIARY = Assignment(turn=20, category="journal", confidence=0.9, start_s=400.0,
                   quote="Between now and next week, keep a mood diary every evening before bed.")
CALL = Assignment(turn=30, category="take_action", confidence=0.8, start_s=500.0,
                  quote="Would you be willing to call your brother and ask him to the football on Sunday?")


def md(text: str, turn: int = 4) -> Microdialogue:
    return Microdialogue("s2", (), WindowTurn("therapist", text, turn, turn, 12.0, 15.0), None, 0.0)


@pytest.mark.parametrize("text", [
    "How did the mood diary go?",
    "Were you able to keep the diary most evenings?",
    "Last time you were going to call your brother. Did you get a chance?",
    "So, how's the diary going?",
    "Let's start with what we talked about last week. How did it go?",
    "Did you manage to fill in the diary before bed?",
    "Any luck with the football invitation?",
    "What's been different since we last met?",
])
def test_turns_that_ask_about_the_previous_homework_are_reviews(text):
    assert rule_reviews(text, [DIARY, CALL]), text


@pytest.mark.parametrize("text", [
    "How did your sister's visit go on Saturday?",  # asks how it went, about something else
    "How is work at the moment?",
    "Did you find parking okay?",
    "Keep a mood diary every evening before bed, starting tonight.",  # assigning, not asking
    "It sounds like the evenings are the hardest part.",
    "How have you been sleeping?",
])
def test_other_turns_are_not(text):
    assert not rule_reviews(text, [DIARY, CALL]), text


def test_nothing_is_a_review_without_previous_homework():
    assert not rule_reviews("How did the homework go last week?", [])
    assert review_of(md("How did the homework go last week?"), []) is None


def test_the_overlap_uses_content_words_not_function_words():
    assert {"mood", "diary"} <= content_words(DIARY.quote)
    assert "between" not in content_words(DIARY.quote) and "this" not in content_words("this week")
    assert content_words("journaling journals") == {"journal"}
    assert asks_about_follow_through("How did it go?") and not asks_about_follow_through("It went well.")


def test_a_review_carries_the_turn_its_time_and_the_rule_as_source():
    r = review_of(md("Were you able to keep the diary?", turn=6), [DIARY])
    assert (r.turn, r.start_s, r.quote, r.source) == (6, 12.0, "Were you able to keep the diary?", "rule")


def test_a_model_review_score_replaces_the_rule_when_present():
    text = "Tell me about your week."  # the rule would say no
    assert review_of(md(text), [DIARY]) is None
    hit = review_of(md(text), [DIARY], model_score=0.83)
    assert hit is not None and hit.source == "model"
    assert review_of(md("How did the diary go?"), [DIARY], model_score=0.1) is None  # the model decides


def test_record_reviews_is_idempotent_and_only_runs_with_previous_homework():
    s = SessionState(session_id="s2", previous_homework=(DIARY, CALL))
    mds = [md("How did the diary go?", 2), md("Okay.", 4), md("Were you able to call your brother?", 6)]
    once = record_reviews(s, mds)
    assert [r.turn for r in once.reviews] == [2, 6]
    assert record_reviews(once, mds) == once
    assert record_reviews(SessionState(session_id="s2"), mds).reviews == ()


# --- the demo's follow-up pairs ------------------------------------------------------------------------
def _demo_pairs():
    """(second session's microdialogues, previous session's planted homework as assignments, labels)."""
    sessions = read_sessions([demo_sessions_dir()])
    expected = json.loads((demo_sessions_dir() / "EXPECTED.json").read_text())
    last_of_client: dict[str, dict] = {}
    pairs = []
    for s in sessions:
        client = (s.get("meta") or {}).get("client_id")
        prev = last_of_client.get(client)
        if prev is not None:
            utts = session_utterances(prev)
            previous = [Assignment(turn=x["turn"], category=x["category"], confidence=1.0,
                                   start_s=utts[x["turn"]].start_s, quote=utts[x["turn"]].text)
                        for x in expected[prev["session_id"]] if "category" in x]
            _, mds = window_session(session_utterances(s), WindowConfig(), s["session_id"])
            labels = {x["turn"] for x in expected[s["session_id"]] if x.get("review")}
            pairs.append((s["session_id"], mds, previous, labels))
        last_of_client[client] = s
    return pairs


def test_demo_follow_up_pairs_exist_for_two_clients():
    pairs = _demo_pairs()
    assert {sid for sid, *_ in pairs} >= {"demo-followup-mood-2", "demo-followup-health-2"}


@pytest.mark.parametrize("sid", ["demo-followup-mood-2", "demo-followup-health-2"])
def test_on_the_demo_pairs_every_rule_review_is_a_labeled_one_and_the_session_verdict_is_right(sid):
    (_, mds, previous, labels), = [p for p in _demo_pairs() if p[0] == sid]
    s = record_reviews(replace(SessionState(session_id=sid), previous_homework=tuple(previous)), mds)
    found = {r.turn for r in s.reviews}
    assert found <= labels  # precision 1 on the demo text
    assert bool(found) == bool(labels)  # the summary's previous_homework_reviewed
