"""The worker's decoded-state cache (stream/app.py DecodedStates): write-through, reads the table once,
never holds ended sessions, and forgets everything when cleared (partitions assigned or positioned)."""
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
