"""Worker kill -9 mid-replay, replacement started at once or after a delay: account for every utterance.

    python benchmarks/crash_restarts.py --rounds 3 --delays 0,15 --kill-at 0.4 --copies 2 --speed 10

Starts one tritonserver, then per run a fresh tansu broker and worker-1 on free loopback ports,
replays the demo sessions (``--copies`` clones each, 2 -> 20 sessions), ``kill -9``s worker-1 at
``--kill-at`` of the replay, starts worker-2 after ``delay`` seconds, and waits for every session's
summary. Right after the kill (the dead worker can change nothing any more) it snapshots, per
``utterances`` partition, the group's committed offset and how far the table changelog's session
states reach (the highest source offset up to which every record is reflected in the changelog):
a committed offset past that point is a state regression the replacement cannot see.

Prints one JSON line per run and a summary; ``--out`` keeps them. Nothing here reads transcript text.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from homework_monitor.cli import summarize_corpus_sessions
from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.classifiers import InProcessClassifier
from homework_monitor.stream.config import Settings


def read_all(settings: Settings, topic: str) -> list:
    """Every record of ``topic`` (no group), in offset order per partition."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(consumer_timeout_ms=500, fetch_max_wait_ms=20, **settings.kafka_client_kwargs())
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    end = c.end_offsets(parts)
    out = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(c.position(tp) < end[tp] for tp in parts):
        for batch in c.poll(timeout_ms=200).values():
            out.extend(batch)
    c.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def committed_offsets(settings: Settings) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(group_id=settings.app_id, enable_auto_commit=False, **settings.kafka_client_kwargs())
    try:
        return {p: c.committed(TopicPartition(settings.topics.utterances, p))
                for p in range(settings.topic_partitions)}
    finally:
        c.close()


def changelog_states(settings: Settings) -> dict[str, dict | None]:
    """Last changelog value per session (None: a tombstone)."""
    topic = f"{settings.app_id}-sessions-changelog"
    last: dict[str, dict | None] = {}
    for r in read_all(settings, topic):
        key = json.loads(r.key) if r.key else None
        if isinstance(key, str):
            last[key] = json.loads(r.value) if r.value else None
    return last


def reflected(msg: dict, state: dict | None) -> bool | None:
    """Is this inbound message reflected in the session's stored state? None: cannot tell."""
    kind = msg.get("type")
    if kind == "utterance":
        return state is not None and state["last_seq"] >= msg["seq"]
    if kind == "session_start":
        return state is not None
    if kind == "session_end":
        return state is not None and bool(state.get("ended"))
    return None  # silence checks change nothing visible once the turn is flushed


def snapshot(settings: Settings) -> dict:
    """Per source partition: committed offset vs the end of the prefix the changelog reflects."""
    source = read_all(settings, settings.topics.utterances)
    states = changelog_states(settings)
    committed = committed_offsets(settings)
    by_part: dict[int, list] = defaultdict(list)
    for r in source:
        by_part[r.partition].append(r)
    out = {}
    for p in range(settings.topic_partitions):
        applied_to = -1  # highest offset o: every record <= o is reflected
        unreflected = []
        for r in by_part[p]:
            msg = json.loads(r.value)
            ok = reflected(msg, states.get(msg.get("session_id")))
            if ok is False:
                unreflected.append(r.offset)
            elif not unreflected:
                applied_to = r.offset
        c = committed[p]
        lost = [o for o in unreflected if c is not None and o < c]
        out[p] = {"end": (by_part[p][-1].offset + 1) if by_part[p] else 0, "committed": c,
                  "changelog_reflects_to": applied_to, "unreflected_below_committed": len(lost),
                  "first_unreflected": unreflected[0] if unreflected else None}
    return out


def account(sessions: list[dict], sent: Counter, out_summaries: list[dict], out_events: list[dict],
            offline_events: set) -> dict:
    by_sid: dict[str, list[dict]] = defaultdict(list)
    for s in out_summaries:
        by_sid[s["session_id"]].append(s)
    rows = {}
    for sid in sent:
        ss = by_sid.get(sid, [])
        rows[sid] = {"sent": sent[sid], "summaries": len({s["summary_id"] for s in ss}),
                     "applied": ss[-1]["n_utterances"] if ss else None,
                     "missing": ss[-1]["missing_utterances"] if ss else None}
    events = {(e["session_id"], e["turn"], e["category"]) for e in out_events}
    lost = sum(r["sent"] - r["applied"] for r in rows.values() if r["applied"] is not None)
    return {"sessions": len(rows),
            "no_summary": sum(r["summaries"] == 0 for r in rows.values()),
            "several_summaries": sum(r["summaries"] > 1 for r in rows.values()),
            "short_sessions": sum(r["applied"] is not None and r["applied"] < r["sent"] for r in rows.values()),
            "utterances_lost": lost,
            "missing_utterances": sum(r["missing"] or 0 for r in rows.values()),
            "events_missing": len(offline_events - events), "events_extra": len(events - offline_events)}


def consume_outputs(settings: Settings, want_sessions: int, timeout_s: float) -> tuple[list, list]:
    from kafka import KafkaConsumer, TopicPartition
    t = settings.topics
    c = KafkaConsumer(consumer_timeout_ms=300, fetch_max_wait_ms=20, **settings.kafka_client_kwargs())
    parts = [TopicPartition(x, p) for x in (t.homework_events, t.session_summaries)
             for p in c.partitions_for_topic(x) or ()]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    events, summaries = [], []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len({s["session_id"] for s in summaries}) < want_sessions:
        for m in c:
            (events if m.topic == t.homework_events else summaries).append(json.loads(m.value))
    time.sleep(3)  # late redeliveries
    for m in c:
        (events if m.topic == t.homework_events else summaries).append(json.loads(m.value))
    c.close()
    return events, summaries


def run_once(base: Settings, sessions, msgs, offline_events, delay_s: float, kill_at: float,
             wait_s: float, workdir: Path, tag: str) -> dict:
    ports = Ports.free()
    run_dir = workdir / tag
    settings = base.model_copy(update={"run_dir": run_dir, "app_id": f"hwm-crash-{ports.kafka}"})
    log_dir = run_dir / "logs"
    sent = Counter(m.key for m in msgs if m.kind == "utterance")
    res: dict = {"run": tag, "delay_s": delay_s, "kill_at": kill_at}
    with ServiceStack() as stack:
        triton_url = settings.triton_url
        settings = start_broker(stack, settings, ports, log_dir).model_copy(update={"triton_url": triton_url})
        start_worker(stack, settings, log_dir, "worker-1")
        sender = threading.Thread(target=replay, args=(msgs, make_producer(settings), settings.topics.utterances),
                                  kwargs={"progress": False})
        sender.start()
        time.sleep(msgs[-1].at * kill_at)
        os.killpg(stack["worker-1"].pid, signal.SIGKILL)
        t_kill = time.monotonic()
        res["at_kill"] = snapshot(settings)
        time.sleep(max(0.0, delay_s - (time.monotonic() - t_kill)))
        try:
            start_worker(stack, settings, log_dir, "worker-2")
        except Exception as exc:  # the stall shows itself here or as missing summaries
            res["worker2_start_error"] = type(exc).__name__
        sender.join()
        events, summaries = consume_outputs(settings, len(sent), wait_s)
        res["after"] = snapshot(settings)
        res.update(account(sessions, sent, summaries, events, offline_events))
        res["bad_partitions"] = sorted({p for p, v in res["after"].items()
                                        if v["committed"] is None or v["committed"] < v["end"]})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delays", default="0,15", help="comma-separated restart delays (s)")
    ap.add_argument("--kill-at", type=float, default=0.4)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--wait", type=float, default=90.0, help="seconds to wait for all summaries after the replay")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    print(f"# {' '.join(sys.argv)}\n# {platform.node()} {platform.platform()} cpus={os.cpu_count()}", flush=True)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="hwm-crash-"))
    base = Settings(run_dir=workdir, silence_flush_s=3.0)
    corpus = read_sessions([demo_sessions_dir()])
    msgs = schedule(corpus, speed=a.speed, stagger_s=0.5, copies=a.copies)
    sessions = [dict(s, session_id=f"{s['session_id']}#{c}") if a.copies > 1 else s
                for c in range(a.copies) for s in corpus]
    offline = summarize_corpus_sessions(sessions, InProcessClassifier(base.artifact_dir), base.event_threshold)
    offline_events = {(s.session_id, x.turn, x.category) for s in offline for x in s.assignments}
    results = []
    with ServiceStack() as triton_stack:
        base = start_triton(triton_stack, base, Ports.free(), workdir / "logs")
        for r in range(a.rounds):
            for delay in [float(x) for x in a.delays.split(",")]:
                res = run_once(base, sessions, msgs, offline_events, delay, a.kill_at, a.wait, workdir,
                               f"r{r}-d{delay:g}")
                results.append(res)
                print(json.dumps(res), flush=True)
    print("# run  delay  no_summary  short  lost  missing  events-/+  bad_partitions")
    for x in results:
        print(f"# {x['run']:8s} {x['delay_s']:4g} {x['no_summary']:3d} {x['short_sessions']:3d} "
              f"{x['utterances_lost']:4d} {x['missing_utterances']:4d} {x['events_missing']:2d}/{x['events_extra']:<2d} "
              f"{x['bad_partitions']}")
    if a.out:
        a.out.write_text("\n".join(json.dumps(x) for x in results) + "\n")
    print(f"# logs under {workdir}")


if __name__ == "__main__":
    main()
