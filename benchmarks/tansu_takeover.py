"""Is the local broker behind the restart "stall"? Two checks against tansu with plain clients.

    python benchmarks/tansu_takeover.py --delays 0,2,5,8,11

1. Fetch from inside a backlog: 400 keyed records in 4 partitions (kafka-python, linger 2 ms, i.e.
   multi-record batches), then kafka-python and aiokafka each read every partition from offset 8.
   Every record from 8 to the end must come back, without a gap.
2. Group takeover after kill -9: an aiokafka group member (its own process, session timeout 10 s) gets
   all 4 partitions and is killed with SIGKILL; a new member of the same group starts after each delay.
   It must end up with all 4 partitions (the dead member's session expires, the group rebalances).

Both pass on tansu 0.6.0 (2026-12): the restart stall was faust's (docs/RESTARTS.md). Prints one line
per check; exit code 1 if any fails.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from homework_monitor.deploy.broker import create_topics, tansu_command, wait_for_port
from homework_monitor.deploy.services import free_port

TOPIC = "t"


def member(bootstrap: str, group: str, name: str) -> None:
    """One group member: prints each assignment as a JSON line, consumes until killed."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            print(json.dumps({"t": time.time(), "who": name, "assigned": sorted(tp.partition for tp in assigned)}),
                  flush=True)

    async def run():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=10_000,
                                    heartbeat_interval_ms=3_000, fetch_max_wait_ms=20)
        consumer.subscribe([TOPIC], listener=Listener())
        await consumer.start()
        while True:
            await consumer.getmany(timeout_ms=500)

    asyncio.run(run())


def start_broker() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(tansu_command("127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, 10)
    bootstrap = f"127.0.0.1:{port}"
    create_topics(bootstrap, {TOPIC: 4})
    return proc, bootstrap


def check_fetch_inside_backlog(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    for i in range(400):
        producer.send(TOPIC, key=f"s{i % 20}".encode(), value=b"x" * 250)
        if i % 7 == 0:
            time.sleep(0.01)
    producer.flush()
    reader = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=1000, fetch_max_wait_ms=20)
    tps = [TopicPartition(TOPIC, p) for p in range(4)]
    reader.assign(tps)
    for tp in tps:
        reader.seek(tp, 8)
    got: dict[str, dict[int, list[int]]] = {"kafka-python": {p: [] for p in range(4)}}
    for msg in reader:
        got["kafka-python"][msg.partition].append(msg.offset)
    reader.close()

    async def with_aiokafka():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
        await consumer.start()
        atps = [ATP(TOPIC, p) for p in range(4)]
        consumer.assign(atps)
        for tp in atps:
            consumer.seek(tp, 8)
        out = {p: [] for p in range(4)}
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                out[tp.partition] += [r.offset for r in records]
        await consumer.stop()
        return out

    got["aiokafka"] = asyncio.run(with_aiokafka())
    ok = True
    for client, parts in got.items():
        for p, offsets in parts.items():
            complete = offsets == list(range(8, 8 + len(offsets))) and len(offsets) > 0
            ok &= complete
            print(f"fetch from 8, {client:12s} p{p}: {len(offsets):3d} records "
                  f"{offsets[0] if offsets else '-'}..{offsets[-1] if offsets else '-'} "
                  f"{'contiguous' if complete else 'GAP'}")
    return ok


def check_takeover(delay_s: float, watch_s: float) -> bool:
    broker, bootstrap = start_broker()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "members.jsonl"
            with open(log, "w") as out:
                def spawn(name: str) -> subprocess.Popen:
                    return subprocess.Popen([sys.executable, __file__, "--member", bootstrap, "g", name],
                                            stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
                first = spawn("A")
                deadline = time.monotonic() + 30
                while '"assigned"' not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(2)
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
                killed_at = time.time()
                time.sleep(delay_s)
                second = spawn("B")
                time.sleep(watch_s)
                os.killpg(second.pid, signal.SIGKILL)
                second.wait()
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    finally:
        broker.terminate()
        broker.wait()
    b = [r for r in rows if r["who"] == "B"]
    final = b[-1]["assigned"] if b else []
    ok = final == [0, 1, 2, 3]
    steps = ", ".join(f"+{r['t'] - killed_at:.1f}s {r['assigned']}" for r in b) or "never assigned"
    print(f"takeover, new member {delay_s:g} s after kill -9: {steps} -> {'ok' if ok else 'STALL'}")
    return ok


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        member(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delays", default="0,2,5,8,11", help="seconds between the kill and the new member")
    ap.add_argument("--watch", type=float, default=35.0, help="seconds to watch the new member")
    a = ap.parse_args()
    print(f"# {' '.join(sys.argv)}\n# {platform.node()} {platform.platform()}")
    broker, bootstrap = start_broker()
    try:
        ok = check_fetch_inside_backlog(bootstrap)
    finally:
        broker.terminate()
        broker.wait()
    for delay in (float(x) for x in a.delays.split(",")):
        ok &= check_takeover(delay, a.watch)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
