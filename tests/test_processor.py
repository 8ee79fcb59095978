"""One micro-batch end to end (validation, windowing, one classifier call, decisions, summaries)."""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from homework_monitor.stream.processor import (
    InboundRecord,
    process_batch,
    retire,
    silence_checks_due,
    window_config,
)
from homework_monitor.stream.schemas import SessionEnd, Utterance
from homework_monitor.stream.windowing import SessionState, WindowTurn


class Store:
    """The Faust table's stand-in: states survive between batches like they do in the changelog."""

    def __init__(self):
        self.states: dict[str, SessionState] = {}
        self.loads: list[str] = []

    def load(self, sid: str) -> SessionState | None:
        self.loads.append(sid)
        return self.states.get(sid)

    def commit(self, result) -> None:
        self.states.update(result.states)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def run_batch(store, fake_classifier, settings, clock):
    async def run(records, commit=True):
        result = await process_batch(records, store.load, fake_classifier, settings, clock)
        if commit:
            store.commit(result)
        return result
    return run


def homework_session(s):
    """Two homework turns (journal at 2, practice at 6) and two plain ones (0, 4)."""
    return [s.therapist("How did the week go?"), s.client("Fine."),
            s.therapist("Could you write down three good moments?"), s.client("Yes."),
            s.therapist("Great. Anything else on your mind?"), s.client("Not really."),
            s.therapist("Then keep doing the slow breathing each night."), s.client("Will do.")]


# ------------------------------------------------------------------------------- events
async def test_events_only_for_homework_turns(run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1", therapist_id="th-1")
    result = await run_batch(record_factory(*homework_session(s), s.therapist("See you.")))
    assert result.n_microdialogues == 4  # turns 0, 2, 4, 6; "See you." is still open
    assert [(e.turn, e.category) for e in result.events] == [(2, "journal"), (6, "practice")]
    assert {e.therapist_id for e in result.events} == {"th-1"}
    assert result.summaries == []


async def test_pair_waits_for_the_next_therapist_utterance(run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    result = await run_batch(record_factory(s.therapist("Please write a short note."), s.client("Ok.")))
    assert result.events == [] and result.n_microdialogues == 0


async def test_summary_only_after_session_end_and_includes_turns_flushed_at_end(
        run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    first = await run_batch(record_factory(*homework_session(s)))
    assert first.summaries == []
    result = await run_batch(record_factory(s.end()))
    assert [(e.turn, e.category) for e in result.events] == [(6, "practice")]  # flushed by the end
    (summary,) = result.summaries
    assert summary.session_id == "s1"
    assert summary.homework_assigned and summary.categories == ["journal", "practice"]
    assert [a.turn for a in summary.assignments] == [2, 6]
    assert (summary.n_utterances, summary.n_microdialogues, summary.missing_utterances) == (8, 4, 0)
    assert summary.model_version == "fake-keywords/1"


async def test_session_in_one_batch_gets_events_and_summary(run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    result = await run_batch(record_factory(*homework_session(s), s.end()))
    assert [e.turn for e in result.events] == [2, 6]
    assert [a.turn for a in result.summaries[0].assignments] == [2, 6]
    assert result.outcomes["ok"] == 8  # the utterances; session_end is a control message


async def test_session_without_homework_gets_a_negative_summary(run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    result = await run_batch(record_factory(s.therapist("Hello."), s.client("Hi."), s.end()))
    assert result.events == []
    assert not result.summaries[0].homework_assigned


async def test_event_fields_come_from_state_and_clock(run_batch, utterance_factory, record_factory, clock):
    s = utterance_factory("s1", program_id="prog-7")
    result = await run_batch(record_factory(s.therapist("Please call your sister.", start_s=4.0),
                                            s.client("Okay."), s.end()))
    (e,) = result.events
    assert (e.category, e.confidence, e.program_id, e.start_s, e.emitted_at) == (
        "take_action", pytest.approx(0.9), "prog-7", 4.0, clock())
    assert result.latencies == [0.0]  # the fake clock did not move


# ------------------------------------------------------------------------------ dead letters
async def test_bad_records_are_dead_lettered_and_valid_ones_still_processed(
        run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    records = record_factory(s.therapist("Try to read the leaflet."), b"{broken", s.client("Sure."),
                             b'{"session_id": "s1", "seq": 99, "speaker": "narrator", "text": "x"}',
                             s.end())
    result = await run_batch(records)
    assert [d.reason for d in result.dead_letters] == ["malformed_json", "unknown_speaker"]
    assert [d.offset for d in result.dead_letters] == [1, 3]
    assert [(e.turn, e.category) for e in result.events] == [(0, "learn")]
    assert result.summaries[0].n_utterances == 2
    assert result.outcomes["dead_letter"] == 2 and result.outcomes["ok"] == 2


async def test_a_batch_of_only_bad_records_calls_no_classifier(run_batch, record_factory, fake_classifier):
    result = await run_batch(record_factory(b"nope", b"[]"))
    assert len(result.dead_letters) == 2 and result.states == {}
    assert fake_classifier.calls == []


# ------------------------------------------------------------------------------- redelivery
async def test_redelivered_batch_emits_nothing_new(run_batch, utterance_factory, record_factory, store):
    s = utterance_factory("s1")
    records = record_factory(*homework_session(s), s.end())
    first = await run_batch(records)
    assert first.events and first.summaries
    again = await run_batch(records)
    assert again.events == [] and again.summaries == [] and again.dead_letters == []
    assert again.states == {}  # nothing to write back
    assert again.outcomes == Counter(duplicate=len(records))


async def test_partially_redelivered_batch_only_processes_the_new_records(
        run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    msgs = homework_session(s)
    first = await run_batch(record_factory(*msgs[:5]))  # closes the journal turn (2)
    assert [e.turn for e in first.events] == [2]
    result = await run_batch(record_factory(*msgs, s.end()))
    assert result.outcomes["duplicate"] == 5
    assert [e.turn for e in result.events] == [6]
    assert [a.turn for a in result.summaries[0].assignments] == [2, 6]


async def test_replay_from_the_old_state_reemits_the_same_ids(run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    records = record_factory(*homework_session(s), s.end())
    first = await run_batch(records, commit=False)  # crash before the table write
    second = await run_batch(records)
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert first.summaries[0].summary_id == second.summaries[0].summary_id


# ------------------------------------------------------------------------- batching & state
async def test_all_microdialogues_of_a_batch_go_to_one_classifier_call(
        run_batch, utterance_factory, record_factory, fake_classifier):
    a, b = utterance_factory("a"), utterance_factory("b")
    records = record_factory(a.therapist("Write a list."), b.therapist("Read chapter two."),
                             a.client("Ok."), b.client("Fine."), a.therapist("Good."),
                             b.therapist("Good."), a.end(), b.end())
    result = await run_batch(records)
    assert len(fake_classifier.calls) == 1
    assert sorted(e.therapist for e in fake_classifier.calls[0]) == [
        "Good.", "Good.", "Read chapter two.", "Write a list."]
    assert sorted((e.session_id, e.category) for e in result.events) == [("a", "journal"), ("b", "learn")]
    assert sorted(s.session_id for s in result.summaries) == ["a", "b"]


async def test_state_is_loaded_once_per_session_per_batch(run_batch, utterance_factory, record_factory, store):
    s = utterance_factory("s1")
    await run_batch(record_factory(s.therapist("a"), s.client("b"), s.therapist("c")))
    assert store.loads == ["s1"]


async def test_last_record_of_points_at_each_sessions_last_applied_record(
        run_batch, utterance_factory, record_factory):
    a, b = utterance_factory("a"), utterance_factory("b")
    result = await run_batch(record_factory(a.therapist("x"), b.therapist("y"), a.client("z"), b"bad"))
    assert result.last_record_of == {"a": 2, "b": 1}


async def test_state_is_retired_after_the_summary(run_batch, utterance_factory, record_factory, store):
    s = utterance_factory("s1", therapist_id="th-1")
    await run_batch(record_factory(*homework_session(s), s.end()))
    state = store.states["s1"]
    assert state.ended and state.last_seq == 7 and state.therapist_id == "th-1"
    assert state.history == () and state.open_turn is None and state.pending_therapist is None
    assert state.assignments == () and state.pending_context == ()
    assert "breathing" not in repr(state.to_json()) and "write" not in repr(state.to_json())


async def test_late_utterance_after_retirement_is_ignored(run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    await run_batch(record_factory(s.therapist("Bye."), s.end()))
    result = await run_batch(record_factory(s.client("One more thing, read this.")))
    assert result.outcomes == Counter(late=1) and result.events == [] and result.states == {}


def test_retire_keeps_only_what_idempotence_needs():
    full = SessionState(session_id="s1", therapist_id="th", client_id="cl", last_seq=9, n_utterances=10,
                        n_microdialogues=4, missing_utterances=1, first_start_s=1.0, last_time_s=2.0)
    assert retire(full) == SessionState(session_id="s1", therapist_id="th", last_seq=9, n_utterances=10,
                                        n_microdialogues=4, ended=True, missing_utterances=1)


def test_window_config_follows_settings(settings_factory):
    cfg = window_config(settings_factory(context_turns=5, silence_flush_s=2.5))
    assert (cfg.context_turns, cfg.silence_flush_s) == (5, 2.5)


# ------------------------------------------------------------------------------ silence
async def test_silence_check_record_flushes_a_waiting_turn(run_batch, utterance_factory, record_factory,
                                                           clock, settings):
    s = utterance_factory("s1")
    await run_batch(record_factory(s.therapist("Maybe write a letter to yourself?")))
    clock.advance(settings.silence_flush_s)
    result = await run_batch(record_factory(s.silence(at=clock())))
    assert [(e.turn, e.category) for e in result.events] == [(0, "journal")]
    assert result.outcomes == Counter(control=1)
    assert result.latencies == [0.0]


def _turn():
    return WindowTurn("therapist", "x", 0, 0, None, None)


def _waiting(sid, at):
    """A session whose therapist turn waits for a reply since ``at``."""
    return SessionState(session_id=sid, last_activity_at=at, pending_therapist=_turn())


def test_silence_checks_due_only_for_waiting_sessions_past_the_limit():
    states = {
        "due": _waiting("due", 10.0),
        "recent": _waiting("recent", 15.0),
        "idle": SessionState(session_id="idle", last_activity_at=0.0),  # nothing waiting
        "ended": replace(_waiting("ended", 0.0), ended=True),
        "none": None,
    }
    assert silence_checks_due(states, now=18.0, silence_s=8.0, already_sent={}) == ["due"]


def test_silence_check_is_not_sent_twice_for_the_same_activity():
    states = {"s1": _waiting("s1", 10.0)}
    assert silence_checks_due(states, 30.0, 8.0, already_sent={"s1": 10.0}) == []
    assert silence_checks_due(states, 30.0, 8.0, already_sent={"s1": 5.0}) == ["s1"]


def test_open_therapist_turn_counts_as_waiting():
    state = replace(SessionState(session_id="s1", last_activity_at=0.0), open_turn=_turn())
    assert silence_checks_due({"s1": state}, 8.0, 8.0, {}) == ["s1"]


# ----------------------------------------------------------- one record's failure (issue 8, defect 1)
def _raw(message) -> bytes:
    return message.model_dump_json().encode()


def triggers() -> dict[str, bytes | str]:
    """The inputs that used to lose a batch (or freeze the worker), one of each."""
    valid = {"type": "utterance", "session_id": "bad", "seq": 0, "speaker": "therapist", "text": "Write it down."}
    return {
        "nested_100k": b"[" * 100_000 + b"]" * 100_000,
        "nested_under_size_limit": b"[" * 20_000 + b"]" * 20_000,
        "lone_surrogate": json.dumps({**valid, "text": "Write \udc80 down."}),
        "therapist_id_1_2_mb": json.dumps({**valid, "therapist_id": "t" * 1_200_000}),
        "seq_2_63": json.dumps({**valid, "seq": 2**63}),
        "nan_start_s": json.dumps({**valid, "start_s": float("nan")}),
        "text_2_mb": json.dumps({**valid, "text": "write " * 350_000}),
        "not_utf8": b"\xff" + json.dumps(valid).encode(),
        "null_value": None,
    }


@pytest.mark.parametrize("name", list(triggers()))
async def test_each_trigger_is_its_own_dead_letter_and_its_neighbours_are_applied(
        name, run_batch, utterance_factory, record_factory):
    s = utterance_factory("s1")
    records = record_factory(s.therapist("Could you write down what happened?"), s.client("Okay."))
    records.insert(1, InboundRecord(value=triggers()[name], key="bad", partition=0, offset=77))
    records += record_factory(s.end())
    result = await run_batch(records)
    (d,) = result.dead_letters
    assert (d.offset, d.key) == (77, "bad")
    assert len(d.model_dump_json().encode()) < 8 * 1024
    assert [(e.session_id, e.turn, e.category) for e in result.events] == [("s1", 0, "journal")]
    assert result.summaries[0].n_utterances == 2
    assert sum(result.outcomes.values()) == len(records)


class JsonStore(Store):
    """Like the worker's table: states kept as JSON and read back with ``SessionState.from_json``."""

    def load(self, sid: str) -> SessionState | None:
        self.loads.append(sid)
        raw = self.states.get(sid)
        return SessionState.from_json(raw) if raw else None

    def commit(self, result) -> None:
        self.states.update({sid: st.to_json() for sid, st in result.states.items()})


async def test_a_record_whose_apply_fails_is_dead_lettered_and_the_batch_goes_on(
        utterance_factory, record_factory, fake_classifier, settings, clock):
    store = JsonStore()
    store.states["old"] = {"session_id": "old", "last_seq": 3}  # written by an incompatible version
    old, s = utterance_factory("old"), utterance_factory("s1")
    records = record_factory(s.therapist("Please read the handout."), old.client(SECRET_TEXT),
                             s.client("Sure."), s.end())
    result = await process_batch(records, store.load, fake_classifier, settings, clock)
    (d,) = result.dead_letters
    assert (d.reason, d.detail, d.offset, d.key) == ("processing_error", "KeyError", 1, "old")
    assert d.payload_sha256 == hashlib.sha256(records[1].value).hexdigest()
    assert SECRET_TEXT not in d.detail
    assert "old" not in result.states  # the failing session's state is left as it was
    assert [(e.session_id, e.category) for e in result.events] == [("s1", "learn")]
    assert result.outcomes == Counter(ok=2, control=1, dead_letter=1)


SECRET_TEXT = "Quokka-Lantern my neighbour Ottoline"


# ---------------------------------------------------------- fuzzed batches account for every record
VALID_IDS = ("valid-a", "valid-b")
fuzz_ids = st.sampled_from(["f1", "f2", "x" * 129, "", "has space"]) | st.text(max_size=6).filter(
    lambda t: not t.startswith("valid"))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(
    alphabet=st.characters(codec=None), max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
message_like = st.fixed_dictionaries(
    {"session_id": fuzz_ids},
    optional={"type": st.sampled_from(["utterance", "session_start", "session_end", "silence_check"])
              | st.text(max_size=5),
              "seq": st.integers(-3, 40) | st.sampled_from([2**31, 2**63]) | json_values,
              "speaker": st.sampled_from(["therapist", "client", "narrator"]) | json_values,
              "text": st.text(alphabet=st.characters(codec=None), max_size=40) | st.sampled_from(
                  ["Please write a list.", "Read this.", "Call her.", "x" * 5000]),
              "start_s": st.floats() | json_values, "n_utterances": st.integers(-1, 50) | json_values,
              "at": st.floats(), "therapist_id": fuzz_ids, "extra": json_values})
fuzz_records = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    message_like.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    message_like,  # in-process dict records take the same path
    st.sampled_from(list(triggers().values())),
)


def valid_records() -> list[InboundRecord]:
    out = []
    for sid in VALID_IDS:
        lines = [("therapist", "How was the week?"), ("client", "Fine."),
                 ("therapist", "Could you write down three good moments?"), ("client", "Yes."),
                 ("therapist", "And call your sister before Friday."), ("client", "I will."),
                 ("therapist", "Good.")]
        msgs = [Utterance(session_id=sid, seq=i, speaker=sp, text=t, therapist_id="th-1")
                for i, (sp, t) in enumerate(lines)]
        msgs.append(SessionEnd(session_id=sid, n_utterances=len(lines)))
        out += [InboundRecord(value=_raw(m), key=sid) for m in msgs]
    return out


async def _run_in_batches(records, batch_size, settings, clock, classifier):
    store, events, summaries, dead, outcomes = Store(), [], [], [], Counter()
    for i in range(0, len(records), batch_size):
        result = await process_batch(records[i:i + batch_size], store.load, classifier, settings, clock)
        store.commit(result)
        events += result.events
        summaries += result.summaries
        dead += result.dead_letters
        outcomes += result.outcomes
    return events, summaries, dead, outcomes


@hypothesis_settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fuzz=st.lists(st.tuples(st.integers(0, 16), fuzz_records), max_size=40),
       batch_size=st.integers(1, 64))
def test_fuzzed_batches_account_for_every_record_and_leave_valid_sessions_unchanged(
        fuzz, batch_size, settings, fake_classifier):
    classifier_cls, clock = type(fake_classifier), (lambda: 1_000.0)
    classifier = classifier_cls()
    valid = valid_records()
    records = list(valid)
    for position, raw in sorted(fuzz, key=lambda x: -x[0]):  # insert from the back: positions stay valid
        records.insert(position, InboundRecord(value=raw, key="fuzz", partition=0, offset=position))
    expected_events, expected_summaries, _, _ = asyncio.run(
        _run_in_batches(valid, len(valid), settings, clock, classifier_cls()))
    events, summaries, dead, outcomes = asyncio.run(
        _run_in_batches(records, batch_size, settings, clock, classifier))

    assert sum(outcomes[k] for k in ("ok", "duplicate", "late", "control", "dead_letter")) == len(records)
    assert sum(outcomes.values()) == len(records) and outcomes["dead_letter"] == len(dead)
    assert all(len(d.model_dump_json().encode()) < 8 * 1024 for d in dead)
    assert [e for e in events if e.session_id in VALID_IDS] == expected_events
    assert [s for s in summaries if s.session_id in VALID_IDS] == expected_summaries
    assert {e.category for e in expected_events} == {"journal", "take_action"}
    for example in (x for call in classifier.calls for x in call):  # what Triton would be sent encodes
        for text in (example.therapist, example.client or "", *(t for _, t in example.context)):
            text.encode("utf-8")


async def test_a_seq_far_ahead_is_refused_and_does_not_silence_the_session(
        run_batch, utterance_factory, record_factory, settings):
    s = utterance_factory("s1")
    first, second = s.therapist("Write it down."), s.client("Okay.")
    far = first.model_copy(update={"seq": settings.max_seq_gap + 5})  # a bogus jump, in bounds for the schema
    result = await run_batch(record_factory(first, far, second, s.therapist("Good."), s.end()))
    assert [d.reason for d in result.dead_letters] == ["seq_gap"]
    (summary,) = result.summaries
    # The rest of the session still applied: nothing silenced as a "duplicate", nothing counted missing.
    assert summary.n_utterances == 3 and summary.missing_utterances == 0
    assert result.outcomes["duplicate"] == 0
