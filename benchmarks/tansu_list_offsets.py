"""Minimal reproduction: tansu 0.6.0 understates a partition's end offset after a multi-record batch.

    python benchmarks/tansu_list_offsets.py

kafka-python only. Starts a memory-backed tansu on a free loopback port, appends single-record and
multi-record batches to a one-partition topic, and after each step compares ListOffsets(latest)
(``end_offsets``) with the offset of the last record actually read back. Apache Kafka answers
last + 1 every time; tansu answers ``base offset of the last batch + 1`` when that batch holds more
than one record, i.e. it reports records of the last batch as not there yet.

Why it matters here: faust recovers a table by reading its changelog up to that end offset and
treats anything after it as not part of the state, so on tansu a restarted worker recovers the
table without the tail of the last changelog batch (docs/RESTARTS.md).
"""
from __future__ import annotations

import platform
import subprocess
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from homework_monitor.deploy.broker import tansu_command, wait_for_port
from homework_monitor.deploy.services import free_port


def main() -> int:
    print(f"# {' '.join(sys.argv)}\n# {platform.node()} {platform.platform()}")
    port = free_port()
    tansu = subprocess.Popen(tansu_command("127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wrong = 0
    try:
        wait_for_port("127.0.0.1", port, 10)
        bootstrap = f"127.0.0.1:{port}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("t", 1, 1)])
        admin.close()
        tp = TopicPartition("t", 0)
        reader = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=500, fetch_max_wait_ms=20)
        print(f"{'step':34s} {'records':>7s} {'last offset':>11s} {'end_offsets':>11s}")
        for step, n, linger_ms in [("1 record, its own batch", 1, 0), ("3 records, 3 batches", 3, 0),
                                   ("5 records, one batch", 5, 100), ("1 record, its own batch", 1, 0)]:
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)
            for _ in range(n):
                future = producer.send("t", b"x")
                if linger_ms == 0:
                    future.get(10)  # acknowledged before the next send: one record per batch
            producer.flush()
            producer.close()
            reader.assign([tp])
            reader.seek_to_beginning(tp)
            offsets = [m.offset for m in reader]
            end = reader.end_offsets([tp])[tp]
            ok = end == offsets[-1] + 1
            wrong += not ok
            verdict = "ok" if ok else f"WRONG: want {offsets[-1] + 1}"
            print(f"{step:34s} {len(offsets):7d} {offsets[-1]:11d} {end:11d}  {verdict}")
        reader.close()
    finally:
        tansu.terminate()
        tansu.wait()
    print(f"# {wrong} wrong end offset(s)")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
