"""Per-session windowing: utterances in, microdialogues out, with an explicit clock."""
from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from homework_monitor.stream.schemas import Assignment, SessionEnd, Utterance
from homework_monitor.stream.windowing import (
    Microdialogue,
    SessionState,
    WindowConfig,
    WindowTurn,
    apply_message,
    apply_session_end,
    apply_silence_check,
    apply_utterance,
    evolve,
    window_session,
)
from tests.conftest import FakeClock, run_messages

CFG = WindowConfig(context_turns=3, silence_flush_s=8.0)


def texts(turns):
    return [(t.speaker, t.text) for t in turns]


# ------------------------------------------------------------------------------------ merging
def test_consecutive_same_speaker_utterances_merge_into_one_turn(utterance_factory):
    s = utterance_factory("s1")
    state, mds, _ = run_messages([s.therapist("Let us try"), s.therapist("something new."),
                                  s.client("Okay."), s.therapist("Next thing.")], CFG)
    assert len(mds) == 1
    assert mds[0].therapist.text == "Let us try something new."
    assert (mds[0].therapist.first_seq, mds[0].therapist.last_seq) == (0, 1)
    assert mds[0].turn == 0
    assert mds[0].client.text == "Okay."


def test_open_turn_keeps_growing_without_emitting(utterance_factory):
    s = utterance_factory("s1")
    state, mds, steps = run_messages([s.client("one"), s.client("two"), s.client("three")], CFG)
    assert mds == []
    assert state.open_turn.text == "one two three"
    assert list(state.open_turn.seqs) == [0, 1, 2]
    assert all(step.outcome == "ok" for step in steps)


# ------------------------------------------------------------------------------------ pairing
def test_microdialogue_is_emitted_only_when_the_next_therapist_utterance_arrives(utterance_factory):
    s = utterance_factory("s1")
    cfg = CFG
    state, mds, _ = run_messages([s.therapist("How was the week?"), s.client("Busy.")], cfg)
    assert mds == []  # the client might still be talking
    assert state.pending_therapist.text == "How was the week?"
    step = apply_message(state, s.therapist("Tell me more."), 10.0, cfg)
    (md,) = step.microdialogues
    assert (md.therapist.text, md.client.text) == ("How was the week?", "Busy.")
    assert md.closed_at == 10.0
    assert md.session_id == "s1"
    assert step.state.n_microdialogues == 1


def test_trigger_seq_is_the_utterance_that_completed_the_microdialogue(utterance_factory):
    s = utterance_factory("s1")
    state, mds, _ = run_messages([s.therapist("Q?"), s.client("A."), s.client("More."),
                                  s.therapist("Next."), s.client("Sure.")], CFG)
    assert [md.trigger_seq for md in mds] == [3]
    flushed = apply_session_end(state, s.end(), 9.0, CFG).microdialogues
    assert [md.trigger_seq for md in flushed] == [None]  # completed by the end, not an utterance


def test_client_utterances_after_the_therapist_turn_all_belong_to_the_reply(utterance_factory):
    s = utterance_factory("s1")
    _, mds, _ = run_messages([s.therapist("Q?"), s.client("first part"), s.client("second part"),
                              s.therapist("Thanks.")], CFG)
    assert mds[0].client.text == "first part second part"
    assert list(mds[0].client.seqs) == [1, 2]


def test_session_starting_with_a_client_turn_uses_it_as_context(utterance_factory):
    s = utterance_factory("s1")
    _, mds, _ = run_messages([s.client("I wanted to start."), s.therapist("Go ahead."),
                              s.client("Here it is."), s.therapist("Thank you.")], CFG)
    (md,) = mds
    assert texts(md.context) == [("client", "I wanted to start.")]
    assert md.therapist.text == "Go ahead."
    assert md.turn == 1


# ------------------------------------------------------------------------------------ context
def _alternating(s, n_pairs):
    msgs = []
    for i in range(n_pairs):
        msgs += [s.therapist(f"t{i}"), s.client(f"c{i}")]
    return msgs


@pytest.mark.parametrize("context_turns", [0, 1, 2, 3, 5])
def test_context_holds_at_most_context_turns_turns(utterance_factory, context_turns):
    s = utterance_factory("s1")
    cfg = WindowConfig(context_turns=context_turns)
    _, mds, _ = run_messages(_alternating(s, 6) + [s.end()], cfg)
    assert len(mds) == 6
    assert all(len(md.context) <= context_turns for md in mds)
    assert len(mds[-1].context) == context_turns


def test_context_is_exactly_the_turns_just_before_the_therapist_turn(utterance_factory):
    s = utterance_factory("s1")
    _, mds, _ = run_messages(_alternating(s, 4) + [s.end()], WindowConfig(context_turns=3))
    by_turn = {md.therapist.text: md for md in mds}
    assert texts(by_turn["t0"].context) == []
    assert texts(by_turn["t1"].context) == [("therapist", "t0"), ("client", "c0")]
    assert texts(by_turn["t3"].context) == [("client", "c1"), ("therapist", "t2"), ("client", "c2")]
    assert [t.model_dump() for t in by_turn["t3"].context_turns()] == [
        {"speaker": "client", "text": "c1"}, {"speaker": "therapist", "text": "t2"},
        {"speaker": "client", "text": "c2"}]


# ------------------------------------------------------------------------------------ silence
def test_no_silence_flush_before_the_silence_limit(utterance_factory):
    clock = FakeClock(100.0)
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Anything else?")], CFG, clock)
    step = apply_silence_check(state, clock.advance(CFG.silence_flush_s - 0.01), CFG)
    assert step.microdialogues == ()
    assert step.outcome == "control"
    assert step.state == state


def test_silence_flush_at_the_limit_emits_the_therapist_turn_without_reply(utterance_factory):
    clock = FakeClock(100.0)
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Anything else?")], CFG, clock)
    assert state.waiting
    at = clock.advance(CFG.silence_flush_s)
    step = apply_silence_check(state, at, CFG)
    (md,) = step.microdialogues
    assert md.client is None
    assert md.therapist.text == "Anything else?"
    assert md.closed_at == at
    assert not step.state.waiting
    assert step.state.pending_therapist is None and step.state.open_turn is None


def test_silence_flush_pairs_a_waiting_client_reply(utterance_factory):
    clock = FakeClock(0.0)
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Will you try it?"), s.client("Yes.")], CFG, clock)
    step = apply_silence_check(state, clock.advance(30.0), CFG)
    (md,) = step.microdialogues
    assert md.client.text == "Yes."


def test_silence_is_measured_from_the_last_activity(utterance_factory):
    clock = FakeClock(0.0)
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Q?")], CFG, clock)
    clock.advance(5.0)
    state = apply_utterance(state, s.therapist("And also?"), clock(), CFG).state
    assert apply_silence_check(state, clock.advance(5.0), CFG).microdialogues == ()
    assert len(apply_silence_check(state, clock.advance(3.0), CFG).microdialogues) == 1


def test_silence_check_on_an_unknown_or_ended_session_changes_nothing(utterance_factory):
    s = utterance_factory("s1")
    fresh = apply_message(None, s.silence(at=1e9), 1e9, CFG)
    assert fresh.microdialogues == () and fresh.state == SessionState(session_id="s1")
    ended, _, _ = run_messages([s.therapist("Bye."), s.end()], CFG)
    step = apply_silence_check(ended, 1e9, CFG)
    assert step.state == ended and step.microdialogues == ()


def test_a_flushed_turn_is_not_flushed_twice(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Q?")], CFG, FakeClock(0.0))
    first = apply_silence_check(state, 20.0, CFG)
    second = apply_silence_check(first.state, 40.0, CFG)
    assert len(first.microdialogues) == 1
    assert second.microdialogues == ()


# -------------------------------------------------------------------------------- session end
def test_session_end_flushes_the_open_client_reply(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Homework?"), s.client("Sure.")], CFG)
    step = apply_session_end(state, s.end(), 50.0, CFG)
    (md,) = step.microdialogues
    assert (md.therapist.text, md.client.text) == ("Homework?", "Sure.")
    assert step.ended_now and step.state.ended
    assert step.state.open_turn is None and step.state.pending_therapist is None


def test_session_end_flushes_an_unanswered_therapist_turn(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Hi."), s.client("Hi."), s.therapist("See you.")], CFG)
    step = apply_session_end(state, s.end(), 50.0, CFG)
    (md,) = step.microdialogues
    assert md.therapist.text == "See you." and md.client is None
    assert step.state.n_microdialogues == 2


def test_second_session_end_is_a_duplicate(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Hi."), s.end()], CFG)
    step = apply_session_end(state, s.end(), 99.0, CFG)
    assert step.outcome == "duplicate" and not step.ended_now and step.state == state


def test_session_end_reports_utterances_never_received(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Hi."), s.client("Hi.")], CFG)
    step = apply_session_end(state, s.end(n_utterances=5), 0.0, CFG)
    assert step.state.missing_utterances == 3


# ---------------------------------------------------------------------- duplicates, late, gaps
def test_redelivered_utterance_is_a_duplicate_and_changes_nothing(utterance_factory):
    s = utterance_factory("s1")
    first, second = s.therapist("One."), s.client("Two.")
    state, _, _ = run_messages([first, second], CFG)
    for again in (first, second, second.model_copy(update={"text": "different words"})):
        step = apply_utterance(state, again, 77.0, CFG)
        assert step.outcome == "duplicate"
        assert step.state is state
        assert step.microdialogues == ()


def test_utterance_after_session_end_is_late(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("Bye."), s.end()], CFG)
    step = apply_utterance(state, s.client("Wait!"), 9.0, CFG)
    assert step.outcome == "late"
    assert step.state is state and step.microdialogues == ()


def test_seq_gap_counts_missing_utterances(utterance_factory):
    s = utterance_factory("s1")
    state, _, _ = run_messages([s.therapist("a", seq=0), s.client("b", seq=3), s.client("c", seq=4),
                                s.therapist("d", seq=7)], CFG)
    assert state.missing_utterances == 4
    assert state.last_seq == 7 and state.n_utterances == 4


def test_utterance_updates_times_and_metadata(utterance_factory):
    s = utterance_factory("s1", therapist_id="th-9")
    state, _, _ = run_messages([s.therapist("a", start_s=3.0, end_s=4.0), s.client("b", start_s=5.0),
                                s.start(client_id="cl-2")], CFG)
    assert state.therapist_id == "th-9" and state.client_id == "cl-2"
    assert state.first_start_s == 3.0 and state.last_time_s == 5.0


# -------------------------------------------------------------------------------------- state
def _rich_state(utterance_factory) -> SessionState:
    s = utterance_factory("s1", therapist_id="th", program_id="p")
    state, _, _ = run_messages([s.client("c0", start_s=1.0), s.therapist("t1", start_s=2.0, end_s=3.0),
                                s.client("c2"), s.therapist("t3"), s.therapist("t3b"), s.client("c5")],
                               CFG, FakeClock(10.0))
    a = Assignment(turn=1, category="journal", confidence=0.9, start_s=2.0, quote="t1")
    return replace(state, assignments=(a,))


def test_session_state_round_trips_through_json(utterance_factory):
    state = _rich_state(utterance_factory)
    assert state.pending_therapist is not None and state.open_turn is not None  # a non-trivial state
    wire = json.loads(json.dumps(state.to_json()))
    assert SessionState.from_json(wire) == state


def test_fresh_and_ended_states_round_trip(utterance_factory):
    s = utterance_factory("s2")
    ended, _, _ = run_messages([s.therapist("x"), s.end()], CFG)
    for state in (SessionState(session_id="s9"), ended):
        assert SessionState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_evolve_equals_dataclasses_replace(utterance_factory):
    state = _rich_state(utterance_factory)
    changes = {"last_seq": 41, "open_turn": None, "nudges_fired": ("late_homework",), "ended": True}
    evolved = evolve(state, **changes)
    assert evolved == replace(state, **changes) and type(evolved) is SessionState
    assert evolve(state) == state and evolve(state) is not state
    assert state.last_seq != 41  # the original is unchanged
    md = Microdialogue("s1", (), state.history[0], None, 1.0)
    assert evolve(md, trigger_seq=7) == replace(md, trigger_seq=7)
    assert evolve(state.history[0], text="x") == replace(state.history[0], text="x")


def test_evolve_refuses_unknown_fields_and_its_premise_holds():
    with pytest.raises(TypeError, match="no field"):
        evolve(SessionState(session_id="s1"), last_sequence=3)
    # evolve copies __dict__ instead of running __init__: right only for classes whose __init__ just
    # sets the fields (no __post_init__, no InitVar, no slots).
    for cls in (SessionState, WindowTurn, Microdialogue):
        assert not hasattr(cls, "__post_init__") and "__slots__" not in cls.__dict__
        assert set(cls.__dataclass_fields__) == {f.name for f in fields(cls)}


def test_apply_message_rejects_unknown_message_types():
    with pytest.raises(TypeError):
        apply_message(SessionState(session_id="s1"), object(), 0.0, CFG)


def test_window_session_flushes_at_the_end(utterance_factory):
    s = utterance_factory("s1")
    utts = _alternating(s, 3)
    state, mds = window_session(utts, CFG, "s1")
    assert [md.therapist.text for md in mds] == ["t0", "t1", "t2"]
    assert state.ended and state.n_microdialogues == 3 and state.missing_utterances == 0


def test_window_turn_extended_keeps_first_seq_and_start():
    u0 = Utterance(session_id="s", seq=4, speaker="client", text="a", start_s=1.0, end_s=2.0)
    u1 = Utterance(session_id="s", seq=5, speaker="client", text="b")
    turn = WindowTurn.of(u0).extended(u1)
    assert (turn.text, turn.first_seq, turn.last_seq, turn.start_s, turn.end_s) == ("a b", 4, 5, 1.0, 2.0)


# ------------------------------------------------------------------ property: redelivery
speakers = st.lists(st.sampled_from(["therapist", "client"]), min_size=0, max_size=14)


def _session(speaker_list):
    msgs = [Utterance(session_id="p", seq=i, speaker=sp, text=f"{sp[0]}{i}")
            for i, sp in enumerate(speaker_list)]
    return msgs + [SessionEnd(session_id="p", n_utterances=len(msgs))]


def _content(mds):
    return sorted(((md.turn, md.context, md.therapist, md.client) for md in mds), key=lambda x: x[0])


def _timeless(state):
    return replace(state, last_activity_at=None)


@hsettings(max_examples=150, deadline=None, database=None)
@given(speakers, st.integers(0, 4), st.data())
def test_redelivering_a_prefix_with_carried_state_is_idempotent(speaker_list, context_turns, data):
    cfg = WindowConfig(context_turns=context_turns)
    msgs = _session(speaker_list)
    k = data.draw(st.integers(0, len(msgs)), label="processed before redelivery")
    clean_state, clean_mds, _ = run_messages(msgs, cfg, FakeClock(0.0))
    state, mds, _ = run_messages(msgs[:k], cfg, FakeClock(0.0))
    state, more, steps = run_messages(msgs, cfg, FakeClock(1000.0), state)  # redelivery from offset 0
    assert all(step.outcome == "duplicate" for step in steps[:k])
    assert _content(mds + more) == _content(clean_mds)  # each microdialogue exactly once
    assert _timeless(state) == _timeless(clean_state)


@hsettings(max_examples=150, deadline=None, database=None)
@given(speakers, st.integers(0, 4), st.data())
def test_restart_from_an_older_committed_state_gives_the_same_microdialogues(speaker_list, context_turns, data):
    cfg = WindowConfig(context_turns=context_turns)
    msgs = _session(speaker_list)
    k = data.draw(st.integers(0, len(msgs)), label="processed before the crash")
    j = data.draw(st.integers(0, k), label="committed state")
    clean_state, clean_mds, _ = run_messages(msgs, cfg, FakeClock(0.0))
    _, before_crash, _ = run_messages(msgs[:k], cfg, FakeClock(0.0))
    committed, committed_mds, _ = run_messages(msgs[:j], cfg, FakeClock(0.0))
    state, after_restart, _ = run_messages(msgs[j:], cfg, FakeClock(500.0), committed)
    assert set(_content(before_crash + after_restart)) == set(_content(clean_mds))
    assert _content(committed_mds + after_restart) == _content(clean_mds)
    assert _timeless(state) == _timeless(clean_state)


events = st.lists(st.one_of(st.tuples(st.just("utt"), st.sampled_from(["therapist", "client"]),
                                      st.floats(0.0, 20.0)),
                            st.tuples(st.just("silence"), st.just(""), st.floats(0.0, 20.0))),
                  max_size=20)


@hsettings(max_examples=300, deadline=None, database=None)
@given(events, st.integers(0, 4))
def test_every_therapist_utterance_is_emitted_exactly_once_with_silences_interleaved(evts, context_turns):
    cfg = WindowConfig(context_turns=context_turns, silence_flush_s=8.0)
    clock, state, mds, seq = FakeClock(0.0), SessionState(session_id="p"), [], 0
    for kind, speaker, gap in evts:
        clock.advance(gap)
        if kind == "utt":
            step = apply_utterance(state, Utterance(session_id="p", seq=seq, speaker=speaker, text=f"u{seq}"),
                                   clock(), cfg)
            seq += 1
        else:
            step = apply_silence_check(state, clock(), cfg)
        state = step.state
        mds += step.microdialogues
    end = apply_session_end(state, SessionEnd(session_id="p", n_utterances=seq), clock(), cfg)
    mds += end.microdialogues
    therapist_seqs = [i for i, (k, sp, _) in enumerate(e for e in evts if e[0] == "utt") if sp == "therapist"]
    emitted = sorted(s for md in mds for s in md.therapist.seqs)
    assert emitted == therapist_seqs
    client_seqs = [s for md in mds if md.client for s in md.client.seqs]
    assert len(client_seqs) == len(set(client_seqs))
    for md in mds:
        assert len(md.context) <= context_turns
        assert all(t.last_seq < md.therapist.first_seq for t in md.context)
        assert md.client is None or md.client.first_seq > md.therapist.last_seq
    assert end.state.n_microdialogues == len(mds)
    assert not end.state.waiting


def test_state_json_keeps_the_stored_layout(utterance_factory):
    """to_json is written field by field for speed; what it stores is what asdict stored (states written
    by earlier workers and by this one recover alike)."""
    from dataclasses import asdict
    state = replace(_rich_state(utterance_factory), nudges_fired=("review_previous",))
    expected = asdict(state)
    for name in ("assignments", "previous_homework", "reviews"):
        expected[name] = [a.model_dump() for a in getattr(state, name)]
    assert json.loads(json.dumps(state.to_json())) == json.loads(json.dumps(expected))
