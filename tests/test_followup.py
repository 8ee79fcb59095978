"""Cross-session follow-up (stream/followup.py): the client history, the previous-session lookup, the
summary's follow-up fields live (process_batch) and offline (summarize_all), and that both agree."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from homework_monitor.stream.aggregation import session_summary
from homework_monitor.stream.followup import (
    HISTORY_SESSIONS,
    ClientHistory,
    history_of,
    previous_session,
    record_session,
    with_previous,
)
from homework_monitor.stream.offline import summarize_all
from homework_monitor.stream.processor import process_batch, window_config
from homework_monitor.stream.schemas import Assignment
from homework_monitor.stream.windowing import SessionState, window_session

JOURNAL = Assignment(turn=2, category="journal", confidence=0.9, start_s=None,
                     quote="Could you write down three good moments each evening?")


def summary_of(sid: str, client: str | None = "c-1", assignments=(JOURNAL,)):
    return session_summary(SessionState(session_id=sid, client_id=client, assignments=tuple(assignments)),
                           "m/1", 0.0)


# --- history ----------------------------------------------------------------------------------------
def test_a_summary_becomes_the_clients_latest_session_idempotently():
    h = record_session(None, summary_of("s1"))
    assert [s.session_id for s in h.sessions] == ["s1"] and h.sessions[0].assignments == [JOURNAL]
    assert record_session(h, summary_of("s1")) == h  # a redelivered summary changes nothing
    h = record_session(record_session(h, summary_of("s2", assignments=())), summary_of("s3"))
    assert [s.session_id for s in h.sessions] == ["s2", "s3"][-HISTORY_SESSIONS:]
    assert history_of(h.model_dump(mode="json")) == h  # as stored in the table


def test_the_previous_session_is_the_newest_other_one():
    h = record_session(record_session(None, summary_of("s1")), summary_of("s2", assignments=()))
    assert previous_session(h, "s3").session_id == "s2"
    assert previous_session(h, "s2").session_id == "s1"  # replayed after its own summary was recorded
    assert previous_session(None, "s3") is None
    assert previous_session(ClientHistory(sessions=[]), "s3") is None


def test_a_session_looks_its_client_up_once():
    h = record_session(None, summary_of("s1"))
    s = with_previous(SessionState(session_id="s2", client_id="c-1"), h)
    assert (s.previous_checked, s.previous_session_id, s.previous_homework) == (True, "s1", (JOURNAL,))
    later = record_session(h, summary_of("s9"))
    assert with_previous(s, later) == s  # later history does not change what the session found
    # nothing yet: looked up again with the next messages, until the first exchange is complete
    first = with_previous(SessionState(session_id="s1", client_id="c-2"), None)
    assert not first.previous_checked
    settled = with_previous(replace(first, n_microdialogues=1), None)
    assert settled.previous_checked and settled.previous_session_id is None
    late = with_previous(first, record_session(None, summary_of("s0", client="c-2")))
    assert late.previous_session_id == "s0"  # a summary that arrived after the session's first message
    assert with_previous(SessionState(session_id="x"), h) == SessionState(session_id="x")  # no client yet


# --- live: through the batch processor ---------------------------------------------------------------
class Histories:
    """The client history table's stand-in, written from summaries as the history agent does."""

    def __init__(self):
        self.by_client: dict[str, ClientHistory] = {}
        self.lookups: list[str] = []

    def load(self, client_id: str) -> ClientHistory | None:
        self.lookups.append(client_id)
        return self.by_client.get(client_id)

    def record(self, summaries) -> None:
        for s in summaries:
            if s.client_id:
                self.by_client[s.client_id] = record_session(self.by_client.get(s.client_id), s)


def first_session(s):
    return [s.start(), s.therapist("Could you write down three good moments each evening?"), s.client("Sure."),
            s.therapist("See you next week."), s.client("Bye."), s.end()]


def second_session(s, review: bool):
    opening = "How did writing down the good moments go?" if review else "How was the traffic today?"
    return [s.start(), s.therapist(opening), s.client("It was fine."), s.therapist("Good, let's start."),
            s.client("Okay."), s.end()]


@pytest.fixture
def live(settings, fake_classifier, clock, record_factory):
    histories, states = Histories(), {}

    async def run(*msgs):
        result = await process_batch(record_factory(*msgs), states.get, fake_classifier, settings, clock,
                                     load_history=histories.load)
        states.update(result.states)
        histories.record(result.summaries)
        return result
    run.histories = histories
    return run


@pytest.mark.parametrize("review", [True, False])
async def test_a_clients_second_session_gets_the_first_ones_homework(live, utterance_factory, review):
    one = await live(*first_session(utterance_factory("s1", client_id="c-1", therapist_id="t-1")))
    (first,) = one.summaries
    assert first.previous_session_id is None and first.previous_homework_reviewed is None
    start, *rest = second_session(utterance_factory("s2", client_id="c-1", therapist_id="t-1"), review)
    opening = await live(start)
    two = await live(*rest)
    (summary,) = two.summaries
    assert summary.previous_session_id == "s1"
    assert [a.turn for a in summary.previous_homework] == [0] and summary.previous_homework[0].category == "journal"
    assert summary.previous_homework_reviewed is review
    assert [r.turn for r in summary.reviews] == ([0] if review else [])
    assert [n.rule for n in opening.nudges] == ["review_previous"]  # at session start, with the homework
    assert opening.nudges[0].previous_assignments == list(summary.previous_homework)
    assert two.nudges == []  # once
    # the first session looks until its first exchange is complete; the second finds it at its start
    assert live.histories.lookups[-1:] == ["c-1"] and len(live.histories.lookups) == 4 + 1


async def test_sessions_of_other_clients_or_without_one_find_nothing(live, utterance_factory):
    await live(*first_session(utterance_factory("s1", client_id="c-1")))
    other = await live(*second_session(utterance_factory("s2", client_id="c-2"), True))
    anonymous = await live(*second_session(utterance_factory("s3"), True))
    for result in (other, anonymous):
        (summary,) = result.summaries
        assert summary.previous_session_id is None and summary.reviews == []
        assert summary.previous_homework_reviewed is None and result.nudges == []


async def test_a_previous_session_without_homework_has_nothing_to_review(live, utterance_factory):
    s1 = utterance_factory("s1", client_id="c-1")
    await live(s1.start(), s1.therapist("How was the week?"), s1.client("Fine."), s1.end())
    two = await live(*second_session(utterance_factory("s2", client_id="c-1"), True))
    (summary,) = two.summaries
    assert summary.previous_session_id == "s1" and summary.previous_homework == []
    assert summary.previous_homework_reviewed is None and two.nudges == []


# --- offline equals online -----------------------------------------------------------------------------
async def test_offline_summaries_have_the_live_fields_and_values(live, utterance_factory, fake_classifier,
                                                                 settings):
    """The same two sessions of one client: process_batch with the history vs summarize_all in file order."""
    scripts = [(utterance_factory("s1", client_id="c-1", therapist_id="t-1", scheduled_minutes=45), first_session),
               (utterance_factory("s2", client_id="c-1", therapist_id="t-1", scheduled_minutes=45),
                lambda s: second_session(s, True))]
    live_summaries, windowed = [], []
    for script, build in scripts:
        msgs = build(script)
        live_summaries += (await live(*msgs)).summaries
        utterances = [m for m in msgs if m.type == "utterance"]
        windowed.append(window_session(utterances, window_config(settings), script.session_id))
    examples = [md.example() for _, mds in windowed for md in mds]
    probs = np.asarray(await fake_classifier.classify(examples))
    offline = summarize_all(windowed, probs, settings.event_threshold, fake_classifier.model_version,
                            default_scheduled_minutes=settings.default_scheduled_minutes)
    # started_at is the worker's wall clock (offline: none) and emitted_at when each was written
    wall = {"started_at", "emitted_at"}
    assert [s.model_dump(exclude=wall) for s in offline] == [s.model_dump(exclude=wall) for s in live_summaries]
    assert offline[1].previous_session_id == "s1" and offline[1].previous_homework_reviewed is True
    assert offline[0].started_at is None and live_summaries[0].started_at is not None
