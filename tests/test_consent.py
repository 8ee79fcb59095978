"""Consent (stream/consent.py) and the session-opened announcement, through process_batch.

Without consent the worker emits nothing of the session and keeps only a marker without text or ids;
the session's later messages are dropped and counted (``no_consent``), never dead-lettered.
"""
from __future__ import annotations

import json

import pytest

from homework_monitor.stream.consent import consent_verdict, declined_marker
from homework_monitor.stream.processor import process_batch
from homework_monitor.stream.schemas import SessionStart
from homework_monitor.stream.windowing import SessionState


class States(dict):
    async def run(self, records, settings, classifier, clock):
        result = await process_batch(records, self.get, classifier, settings, clock)
        self.update(result.states)
        return result


def outputs(result) -> list:
    return [*result.events, *result.summaries, *result.nudges, *result.opened, *result.dead_letters]


def homework_session(s, **start):
    return [s.start(**start), s.therapist("Please write down three good moments each day.", start_s=2900.0),
            s.client("Okay.", start_s=2905.0), s.therapist("See you next week.", start_s=2910.0), s.end()]


async def test_a_session_without_consent_produces_and_stores_nothing(settings, fake_classifier, clock,
                                                                     utterance_factory, record_factory):
    states = States()
    s = utterance_factory("private", therapist_id="t-1", client_id="c-1", scheduled_minutes=50)
    start, *rest = homework_session(s, consent=False)
    first = await states.run(record_factory(start), settings, fake_classifier, clock)
    later = await states.run(record_factory(*rest, s.silence(clock() + 60)), settings, fake_classifier, clock)
    for result in (first, later):
        assert outputs(result) == []  # no event, summary, nudge, announcement or dead letter
    assert first.declined == ["private"] and later.declined == []  # counted once
    assert first.outcomes["no_consent"] == 1 and later.outcomes["no_consent"] == len(rest) + 1
    assert fake_classifier.calls == []  # its text never reached the model
    marker = states["private"]
    assert marker == declined_marker("private")
    stored = json.dumps(marker.to_json())
    assert "write down" not in stored and "t-1" not in stored and "c-1" not in stored
    assert marker.ended  # retired: the timer skips it and it expires like any tombstone


async def test_redelivered_declining_start_counts_once(settings, fake_classifier, clock, utterance_factory,
                                                       record_factory):
    states = States()
    s = utterance_factory("private")
    start = s.start(consent=False)
    await states.run(record_factory(start), settings, fake_classifier, clock)
    again = await states.run(record_factory(start), settings, fake_classifier, clock)
    assert again.declined == [] and again.outcomes == {"no_consent": 1}


async def test_a_late_declining_start_drops_what_the_batch_holds_of_the_session(
        settings, fake_classifier, clock, utterance_factory, record_factory):
    """A producer that sends the declining start after some utterances: nothing more is emitted."""
    states = States()
    s = utterance_factory("late")
    msgs = homework_session(s)
    result = await states.run(record_factory(*msgs[1:3], s.start(consent=False), *msgs[3:]), settings,
                              fake_classifier, clock)
    assert outputs(result) == [] and states["late"] == declined_marker("late")


@pytest.mark.parametrize("consent, processed", [(True, True), (None, False), (False, False)])
async def test_require_consent_processes_only_consenting_sessions(settings_factory, fake_classifier, clock,
                                                                  utterance_factory, record_factory, consent,
                                                                  processed):
    settings = settings_factory(require_consent=True)
    states = States()
    s = utterance_factory("s1")
    result = await states.run(record_factory(*homework_session(s, consent=consent)), settings, fake_classifier, clock)
    assert bool(result.summaries) is processed and bool(result.events) is processed
    assert (result.declined == ["s1"]) is not processed


async def test_require_consent_declines_a_session_that_starts_without_a_session_start(
        settings_factory, fake_classifier, clock, utterance_factory, record_factory):
    states = States()
    s = utterance_factory("s1")
    msgs = homework_session(s, consent=True)
    result = await states.run(record_factory(*msgs[1:]), settings_factory(require_consent=True),
                              fake_classifier, clock)
    assert outputs(result) == [] and result.outcomes == {"no_consent": len(msgs) - 1}


def test_consent_verdicts():
    start = SessionStart(session_id="s", consent=None)
    consented = SessionState(session_id="s", consent=True)
    assert consent_verdict(None, start, require_consent=False) == "process"
    assert consent_verdict(None, start, require_consent=True) == "decline"
    assert consent_verdict(consented, start, require_consent=True) == "process"  # a repeated start
    assert consent_verdict(consented, SessionStart(session_id="s", consent=False), False) == "decline"
    assert consent_verdict(declined_marker("s"), SessionStart(session_id="s", consent=True), False) == "drop"


# --- session-opened ----------------------------------------------------------------------------------
async def test_the_first_message_of_a_session_announces_it_once(settings, fake_classifier, clock,
                                                                utterance_factory, record_factory):
    states = States()
    s = utterance_factory("s1", therapist_id="t-1", client_id="c-1", program_id="p-1", scheduled_minutes=45)
    msgs = homework_session(s)
    first = await states.run(record_factory(msgs[0]), settings, fake_classifier, clock)
    (opened,) = first.opened
    assert (opened.session_id, opened.therapist_id, opened.client_id, opened.program_id,
            opened.scheduled_minutes) == ("s1", "t-1", "c-1", "p-1", 45)
    assert opened.started_at == clock() and opened.emitted_at == clock()
    clock.advance(30)
    rest = await states.run(record_factory(*msgs[1:]), settings, fake_classifier, clock)
    assert rest.opened == []
    (summary,) = rest.summaries
    assert summary.started_at == opened.started_at and summary.scheduled_minutes == 45


async def test_a_session_without_scheduled_minutes_is_announced_with_the_default(
        settings_factory, fake_classifier, clock, utterance_factory, record_factory):
    states = States()
    s = utterance_factory("s1")
    result = await states.run(record_factory(s.therapist("Hello.", start_s=3.0)),
                              settings_factory(default_scheduled_minutes=60), fake_classifier, clock)
    (opened,) = result.opened
    assert opened.scheduled_minutes == 60 and opened.start_s == 3.0
