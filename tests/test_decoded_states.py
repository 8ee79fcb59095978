"""The worker's decoded-state cache (stream/app.py DecodedStates): serves what the agent applied,
reads the table once, never holds ended sessions once written, holds applied states until they are
written, and forgets everything when cleared (partitions assigned or positioned)."""
from homework_monitor.stream.app import DecodedStates
from homework_monitor.stream.expiry import with_retirement
from homework_monitor.stream.progress import marker_key, marker_value
from homework_monitor.stream.windowing import SessionState


class CountingTable(dict):
    reads = 0

    def read(self, sid):
        self.reads += 1
        return self.get(sid)


def test_a_state_is_decoded_once_then_served_from_the_cache():
    table, cache = CountingTable(s1=SessionState(session_id="s1", last_seq=4).to_json()), DecodedStates()
    assert cache.get("s1", table.read).last_seq == 4
    assert cache.get("s1", table.read).last_seq == 4
    assert table.reads == 1
    assert cache.get("nope", table.read) is None


def test_write_through_wins_over_the_table_until_cleared():
    table, cache = CountingTable(s1=SessionState(session_id="s1", last_seq=1).to_json()), DecodedStates()
    cache.put(SessionState(session_id="s1", last_seq=7))
    assert cache.get("s1", table.read).last_seq == 7 and table.reads == 0
    cache.clear()  # recovery rewrote the table: the table is the record again
    assert cache.get("s1", table.read).last_seq == 1


def test_ended_sessions_are_not_held_and_the_timer_skips_their_tombstones():
    ended = SessionState(session_id="s2", ended=True)
    table = CountingTable(s1=SessionState(session_id="s1").to_json(), s2=with_retirement(ended.to_json(), 5.0, 0))
    table[marker_key("utterances", 0)] = marker_value(3)  # a progress marker is not a session
    cache = DecodedStates()
    assert set(cache.live(list(table), table.read)) == {"s1"}
    reads = table.reads
    assert set(cache.live(list(table), table.read)) == {"s1"}
    assert table.reads == reads  # the tombstone and the live state are not read again
    cache.put(SessionState(session_id="s1", ended=True))
    assert cache.live(list(table), table.read) == {}


def test_an_expired_id_used_again_is_a_live_session():
    cache = DecodedStates()
    cache.put(SessionState(session_id="s3", ended=True))
    cache.put(SessionState(session_id="s3", last_seq=0))
    assert set(cache.live(["s3"], lambda sid: None)) == {"s3"}


def test_staged_states_win_over_the_table_until_taken_for_writing():
    table = CountingTable(s1=SessionState(session_id="s1", last_seq=1).to_json())
    cache = DecodedStates()
    cache.stage(SessionState(session_id="s1", last_seq=5), event="e1")
    cache.stage(SessionState(session_id="s2", last_seq=0), event="e2")  # not in the table yet
    assert cache.get("s1", table.read).last_seq == 5 and table.reads == 0
    assert set(cache.live(list(table), table.read)) == {"s1", "s2"}  # the silence timer sees s2 too
    cache.stage(SessionState(session_id="s1", last_seq=6), event="e3")  # a later batch: one entry per session
    taken = cache.take_unwritten()
    assert {sid: (st.last_seq, ev) for sid, (st, ev) in taken.items()} == {"s1": (6, "e3"), "s2": (0, "e2")}
    assert not cache.has_unwritten() and cache.take_unwritten() == {}
    assert cache.get("s1", table.read).last_seq == 6  # still decoded (the table gets it from the write)


def test_an_ended_session_is_served_from_the_staged_state_until_written():
    table = CountingTable(s1=SessionState(session_id="s1", last_seq=3).to_json())
    cache = DecodedStates()
    cache.stage(SessionState(session_id="s1", last_seq=4, ended=True), event="e")
    assert cache.get("s1", table.read).ended  # not the table's older live state
    assert cache.live(list(table), table.read) == {}


def test_clearing_drops_unwritten_states_and_says_how_many():
    cache = DecodedStates()
    cache.stage(SessionState(session_id="s1"), event="e")
    assert cache.clear() == 1 and not cache.has_unwritten()
    assert cache.get("s1", lambda sid: None) is None


def test_states_of_a_failed_write_are_staged_again_unless_a_newer_one_is():
    cache = DecodedStates()
    cache.stage(SessionState(session_id="s1", last_seq=1), event="e1")
    cache.stage(SessionState(session_id="s2", last_seq=1), event="e2")
    taken = cache.take_unwritten()
    cache.stage(SessionState(session_id="s1", last_seq=2), event="e3")  # a batch finished during the write
    cache.restage(taken)
    again = cache.take_unwritten()
    assert {sid: st.last_seq for sid, (st, _) in again.items()} == {"s1": 2, "s2": 1}
