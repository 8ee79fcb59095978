"""Replay schedule: pace, ordering, staggering and the committed demo sessions."""
from __future__ import annotations

import json
from collections import defaultdict

import pytest

from homework_monitor.producers.replay import (
    TURN_GAP_S,
    WORDS_PER_S,
    demo_sessions_dir,
    read_sessions,
    schedule,
    session_messages,
    sustained,
    utterance_offsets,
)
from homework_monitor.stream.schemas import INBOUND, SessionEnd, SessionStart, Utterance
from homework_monitor.stream.validation import Ok, parse_inbound


def session(sid="r1", n=4, start_s=None, meta=None, words=3):
    utts = []
    for i in range(n):
        u = {"speaker": "therapist" if i % 2 == 0 else "client", "text": " ".join(["word"] * words)}
        if start_s is not None:
            u["start_s"] = start_s[i]
        utts.append(u)
    return {"session_id": sid, "meta": meta or {}, "utterances": utts}


def decoded(msgs):
    return [INBOUND.validate_json(m.value) for m in msgs]


# ------------------------------------------------------------------------------------ offsets
def test_offsets_use_real_start_times_when_all_present():
    utts = [{"text": "a", "start_s": 10.0}, {"text": "b c", "start_s": 12.5}, {"text": "d", "start_s": 20.0}]
    assert utterance_offsets(utts) == [0.0, 2.5, 10.0]


def test_offsets_are_synthetic_when_any_start_is_missing():
    utts = [{"text": "one two three four five", "start_s": 1.0}, {"text": "six"},
            {"text": "seven eight", "start_s": 9.0}]
    first = 5 / WORDS_PER_S + TURN_GAP_S
    assert utterance_offsets(utts) == pytest.approx([0.0, first, first + 1 / WORDS_PER_S + TURN_GAP_S])


def test_synthetic_pace_is_150_words_per_minute_plus_one_second():
    utts = [{"text": " ".join(["w"] * 150)}, {"text": "end"}]
    assert utterance_offsets(utts) == pytest.approx([0.0, 61.0])


def test_offsets_of_no_utterances():
    assert utterance_offsets([]) == []


# ---------------------------------------------------------------------------- one session
def test_session_messages_start_first_end_last_with_seq_as_index():
    msgs = session_messages(session(n=4, meta={"therapist_id": "th-3"}), start_at=0.0, speed=1.0)
    kinds = [m.kind for m in msgs]
    assert kinds == ["session_start", "utterance", "utterance", "utterance", "utterance", "session_end"]
    parsed = decoded(msgs)
    assert isinstance(parsed[0], SessionStart) and parsed[0].therapist_id == "th-3"
    assert [u.seq for u in parsed[1:-1]] == [0, 1, 2, 3] == [m.seq for m in msgs[1:-1]]
    assert all(u.therapist_id == "th-3" for u in parsed[1:-1])
    assert isinstance(parsed[-1], SessionEnd) and parsed[-1].n_utterances == 4
    assert {m.key for m in msgs} == {"r1"}


def test_session_messages_skip_other_speakers_and_keep_seq_dense():
    s = session(n=3)
    s["utterances"].insert(1, {"speaker": "interpreter", "text": "aside"})
    msgs = session_messages(s, 0.0, 1.0)
    parsed = decoded(msgs)
    assert [u.seq for u in parsed if isinstance(u, Utterance)] == [0, 1, 2]
    assert parsed[-1].n_utterances == 3


def test_speed_divides_times_but_not_the_start():
    s = session(n=3, start_s=[0.0, 4.0, 10.0])
    slow = session_messages(s, start_at=5.0, speed=1.0)
    fast = session_messages(s, start_at=5.0, speed=4.0)
    assert [m.at for m in slow if m.kind == "utterance"] == [5.0, 9.0, 15.0]
    assert [m.at for m in fast if m.kind == "utterance"] == [5.0, 6.0, 7.5]
    assert fast[-1].at == pytest.approx(7.501)


def test_replayed_messages_pass_validation():
    for m in session_messages(session(n=3), 0.0, 1.0):
        assert isinstance(parse_inbound(m.value, max_text_chars=4000, received_at=0.0), Ok)


def test_non_monotonic_start_times_never_reorder_a_session():
    s = session(n=4, start_s=[1.0, 9.0, 8.0, 12.0])  # overlapping speech in a diarized transcript
    msgs = schedule([s], speed=1.0, stagger_s=0.0)
    seqs = [m.seq for m in msgs if m.kind == "utterance"]
    assert seqs == sorted(seqs)


def test_replay_never_sends_an_utterance_the_worker_rejects():
    s = session(n=3)
    s["utterances"][1]["text"] = "  "
    for m in session_messages(s, 0.0, 1.0):
        assert isinstance(parse_inbound(m.value, max_text_chars=4000, received_at=0.0), Ok)


def test_replay_and_offline_assign_the_same_seq():
    from homework_monitor.stream.offline import session_utterances
    s = session(n=4)
    s["utterances"].insert(1, {"speaker": "interpreter", "text": "aside"})
    online = [(u.seq, u.text) for u in decoded(session_messages(s, 0.0, 1.0)) if isinstance(u, Utterance)]
    offline = [(u.seq, u.text) for u in session_utterances(s)]
    assert online == offline


# ------------------------------------------------------------------------------- schedules
def _per_session(msgs):
    by = defaultdict(list)
    for m in msgs:
        by[m.key].append(m)
    return by


def test_schedule_is_sorted_by_time_with_staggered_starts():
    sessions = [session("a", n=4), session("b", n=2), session("c", n=3)]
    msgs = schedule(sessions, speed=2.0, stagger_s=1.5)
    assert [m.at for m in msgs] == sorted(m.at for m in msgs)
    by = _per_session(msgs)
    assert [by[k][0].at for k in "abc"] == [0.0, 1.5, 3.0]
    for k, n in zip("abc", (4, 2, 3)):
        kinds = [m.kind for m in by[k]]
        assert kinds[0] == "session_start" and kinds[-1] == "session_end"
        assert [m.seq for m in by[k] if m.kind == "utterance"] == list(range(n))
        assert decoded(by[k][-1:])[0].n_utterances == n


def test_sustained_keeps_every_slot_busy_until_the_end():
    # sessions of 10 s (utterances at 0, 2, ..., 10 s of real timing), a new one 1 s after the last ends
    msgs = sustained([session("a", n=6, start_s=[0, 2, 4, 6, 8, 10]), session("b", n=6, start_s=[0, 2, 4, 6, 8, 10])],
                     slots=3, duration_s=30.0, stagger_s=0.5, gap_s=1.0)
    assert [m.at for m in msgs] == sorted(m.at for m in msgs) and max(m.at for m in msgs) <= 30.0
    by = _per_session(msgs)
    for slot in range(3):
        mine = sorted((k for k in by if k.split("#")[1].startswith(f"{slot}.")), key=lambda k: by[k][0].at)
        assert [k.split("#")[1] for k in mine] == [f"{slot}.{n}" for n in range(3)]  # 0-10, 11-21, 22-30 (cut)
        starts = [by[k][0].at for k in mine]
        assert starts[0] == slot * 0.5 and all(abs(b - a - 11.0) < 0.01 for a, b in zip(starts, starts[1:]))
        assert [m.kind for m in by[mine[0]]][-1] == "session_end" and by[mine[-1]][-1].kind != "session_end"
    assert {k.split("#")[0] for k in by} == {"a", "b"}  # slots take turns through the sessions


def test_copies_make_distinct_session_ids():
    msgs = schedule([session("a"), session("b")], speed=1.0, stagger_s=1.0, copies=3)
    keys = {m.key for m in msgs}
    assert keys == {"a#0", "a#1", "a#2", "b#0", "b#1", "b#2"}
    for m in msgs:
        assert decoded([m])[0].session_id == m.key
    starts = sorted(m.at for m in msgs if m.kind == "session_start")
    assert starts == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_single_copy_keeps_the_session_id():
    assert {m.key for m in schedule([session("a")], 1.0, 1.0)} == {"a"}


def test_read_sessions_reads_files_and_directories(tmp_path):
    (tmp_path / "one.jsonl").write_text(json.dumps(session("x")) + "\n\n" + json.dumps(session("y")) + "\n")
    sub = tmp_path / "dir"
    sub.mkdir()
    (sub / "two.jsonl").write_text(json.dumps(session("z")) + "\n")
    (sub / "ignored.txt").write_text("not a session")
    assert [s["session_id"] for s in read_sessions([tmp_path / "one.jsonl", sub])] == ["x", "y", "z"]


# ---------------------------------------------------------------------------- demo sessions
@pytest.fixture(scope="module")
def demo_sessions():
    return read_sessions([demo_sessions_dir()])


def test_demo_sessions_parse_into_valid_messages(demo_sessions):
    assert len(demo_sessions) >= 1
    for s in demo_sessions:
        msgs = session_messages(s, 0.0, 1.0)
        assert all(isinstance(parse_inbound(m.value, max_text_chars=4000, received_at=0.0), Ok) for m in msgs)


def test_demo_session_ids_are_unique(demo_sessions):
    ids = [s["session_id"] for s in demo_sessions]
    assert len(ids) == len(set(ids))


def test_expected_turns_point_at_therapist_utterances(demo_sessions):
    expected = json.loads((demo_sessions_dir() / "EXPECTED.json").read_text())
    by_id = {s["session_id"]: s for s in demo_sessions}
    assert set(expected) <= set(by_id)
    for sid, items in expected.items():
        utts = [u for u in by_id[sid]["utterances"] if u["speaker"] in ("therapist", "client")]
        for item in items:
            turn = item["turn"]
            assert utts[turn]["speaker"] == "therapist", (sid, turn)
            # a turn starts with its first utterance: the one before belongs to the client
            assert turn == 0 or utts[turn - 1]["speaker"] == "client", (sid, turn)
            # a homework assignment (category) or a review of the previous session's homework
            assert item.get("category") in ("practice", "take_action", "journal", "learn") or \
                (item.get("review") is True and "category" not in item), (sid, item)
