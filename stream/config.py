"""The one typed configuration shared by the worker, the producers and the CLI.

Every field can be set from the environment with the ``HWM_`` prefix (``HWM_KAFKA_BOOTSTRAP``,
``HWM_TRITON_URL``...) or a ``.env`` file. Secrets are ``SecretStr`` so they never print.
Defaults never depend on where the source tree is: paths are relative to the working directory
(``var``, ``../shared/data``) or come from the installed package's resources (the served model).
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from homework_monitor.contract import MODEL_NAME
from homework_monitor.triton_models import MODEL_REPOSITORY, SERVED_ARTIFACT

# Shared corpora and labels live outside the repo (licences forbid copying them in): by default the
# ``shared/data`` beside the project checkout, i.e. ``../shared/data`` from where commands run.
DEFAULT_DATA_DIR = Path("..") / "shared" / "data"


def default_data_dir() -> Path:
    """``HWM_DATA_DIR`` or ``../shared/data`` (for code that reads data without a full Settings)."""
    return Settings().data_dir


class TopicNames(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HWM_TOPIC_", extra="ignore")

    utterances: str = "utterances"
    homework_events: str = "homework-events"
    session_summaries: str = "session-summaries"
    dead_letter: str = "dead-letter"
    nudges: str = "nudges"
    session_opened: str = "session-opened"


class StoreSettings(BaseSettings):
    """The clinicians' store (homework_monitor.store): SQLite file by default, PostgreSQL in production."""
    model_config = SettingsConfigDict(env_prefix="HWM_STORE_", extra="ignore")

    # SQLAlchemy URL; None: a SQLite file under the run dir. A PostgreSQL URL can hold a password.
    url: SecretStr | None = None
    # Events, summaries, nudges, feedback and audit records older than this are deleted.
    retention_days: float = Field(365.0, gt=0)
    # How often the sink runs the retention purge (also at its start); `homework-monitor store purge` runs it once.
    purge_interval_hours: float = Field(1.0, gt=0)
    # The sink's Kafka consumer group; None: "<HWM_APP_ID>-store-sink".
    sink_group: str | None = None


class WebSettings(BaseSettings):
    """The clinicians' web app (homework_monitor.web)."""
    model_config = SettingsConfigDict(env_prefix="HWM_WEB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    users_file: Path | None = None  # users and roles (docs/SURFACES.md); None: the demo users
    session_ttl_minutes: float = Field(480.0, gt=0)
    oidc_issuer: str | None = None  # an OIDC provider replaces the users file when set
    # Signs the CSRF tokens (itsdangerous). None: a random key per start, so tokens in open pages stop
    # working after a restart (the page reloads). Set it when several web processes share one store.
    secret_key: SecretStr | None = None
    # Secure cookies (sent over HTTPS only): set it wherever the app is reached over TLS (production).
    cookie_secure: bool = False
    # How often a live page's event stream looks in the store for new detections, nudges and summaries.
    poll_interval_s: float = Field(1.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HWM_", env_file=".env", extra="ignore",
                                      env_nested_delimiter="__")

    # Kafka: a plain address, so production Apache Kafka and the local tansu broker are the same code.
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    topics: TopicNames = Field(default_factory=TopicNames)
    store: StoreSettings = Field(default_factory=StoreSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    # Partitions of every session-keyed topic: the most workers of one group that get work (docs/SCALING.md).
    topic_partitions: int = Field(4, ge=1)
    # The local stack (deploy/local_stack.py, `homework-monitor demo`) starts this many workers in one
    # consumer group, worker-1..N, each with its own metrics port and state dir. In production the
    # orchestrator sets the count (the StatefulSet's replicas). Workers beyond the partition count idle.
    local_workers: int = Field(1, ge=1)
    # Model instances in the local stack's tritonserver (the config's instance_group count).
    triton_instances: int = Field(1, ge=1)
    # The model the local stack's tritonserver serves, a folder inside the version folder: "artifact"
    # (two encoder views, the default), "artifact/student" (one pass, 1.7x the CPU throughput) or
    # "artifact/v2_head" (the same encoder, a head trained on every label); their accuracy against the
    # default: training/RESULTS.md, "CPU student".
    triton_artifact: str = Field("artifact", pattern=r"^artifact(/[a-z0-9_]+)?$")
    app_id: str = "homework-monitor"
    worker_id: str = "worker-1"
    broker_session_timeout_s: float = 10.0  # tansu completes group joins only after half of it
    # tansu answers a fetch only when its max wait expires, even if data arrives meanwhile (measured:
    # p50 389 ms at 1500 ms vs 8 ms at 20 ms). Apache Kafka wakes on data; 500 is fine there.
    consumer_fetch_max_wait_ms: int = Field(20, ge=1)
    # Records per hand-over from the consumer's fetching thread to the agents (faust's
    # broker_max_poll_records; unbounded by default there), and how long the producer gathers output
    # and changelog records into one request (faust's producer_linger). Measured together at max
    # rate: docs/SCALING.md, section 2.
    consumer_max_poll_records: int = Field(2000, ge=1)
    producer_linger_s: float = Field(0.005, ge=0, le=0.1)

    # Classifier service.
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = MODEL_NAME
    # CPU Triton needs ~1 s for a 32-microdialogue batch; a timeout retries the same slice.
    triton_timeout_s: float = Field(10.0, gt=0)
    # Retries of a request the server rejects (INVALID_ARGUMENT and the like): 0 fails at once.
    # Transient server states (unavailable, timed out, shutting down, model unloading) never count:
    # they wait with capped backoff for as long as it takes, and the stall detector watches the wait.
    triton_retries: int = Field(3, ge=0)
    triton_backoff_s: float = Field(0.05, gt=0)
    triton_backoff_max_s: float = Field(5.0, gt=0)
    triton_max_batch: int = Field(16, ge=1)  # checked against the server's max_batch_size at start
    triton_max_inflight: int = Field(4, ge=1)

    # Stream processing.
    batch_size: int = Field(64, ge=1)
    batch_within_s: float = Field(0.01, gt=0)
    # Offsets are committed this often, and the session states applied since the last commit are
    # written to the table (with each partition's position marker) just before: a session is written
    # once per interval however many utterances it got. A worker killed without notice applies up
    # to this much of its input again (same event and summary ids); a graceful stop writes all.
    commit_interval_s: float = Field(1.0, gt=0)
    # The worker's event loop. Faust's path from fetch to agent is callbacks and queues, and uvloop
    # runs them in C: about 1.2x the stream path's rate per worker alone (docs/SCALING.md, section 2).
    # "asyncio" is the standard library's loop (also where uvloop is not installed: Windows).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Replay sends an utterance when it starts, so a long turn already looks like ~10 s of silence.
    silence_flush_s: float = Field(20.0, gt=0)
    silence_check_interval_s: float = Field(1.0, gt=0)
    max_text_chars: int = Field(4000, ge=1)
    # A seq this far past its session's last one is refused: accepting it would make every later
    # utterance of the session look like a redelivery (silenced) and count the gap as missing.
    max_seq_gap: int = Field(1000, ge=1)
    context_turns: int = Field(3, ge=0)
    # Chosen on out-of-fold sessions_dev predictions (training/RESULTS.md, session sweep).
    event_threshold: float = Field(0.6, ge=0, le=1)

    # Nudges and consent (docs/NUDGES.md). Rules are pure (stream/nudges.py), each fires at most once
    # per session. A session without scheduled_minutes is taken to last default_scheduled_minutes.
    default_scheduled_minutes: int = Field(50, ge=1)
    nudge_no_homework_before_end_min: float = Field(10.0, ge=0)  # N: "no homework yet" this long before the end
    nudge_review_within_min: float = Field(10.0, gt=0)  # M: "not yet reviewed" after this long without a review
    require_consent: bool = False  # True: a session is processed only after a session_start with consent
    # The nudge rules that fire (docs/NUDGES.md); HWM_NUDGE_RULES='["no_homework_yet"]' keeps one, '[]' none.
    nudge_rules: frozenset[Literal["no_homework_yet", "review_previous", "not_yet_reviewed"]] = frozenset(
        {"no_homework_yet", "review_previous", "not_yet_reviewed"})

    # The worker's HTTP endpoint: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).
    # Loopback by default; a pod that is probed or scraped from outside sets HWM_METRICS_HOST=0.0.0.0.
    metrics_port: int = 9100
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"

    # Health. A partition with lag (records past what was processed) and no progress for
    # stall_timeout_s makes the worker not ready; after stall_exit_s it exits non-zero so the
    # orchestrator restarts it. A broker unreachable for broker_unreachable_exit_s does the same.
    health_check_interval_s: float = Field(5.0, gt=0)
    stall_timeout_s: float = Field(120.0, gt=0)
    stall_exit_s: float = Field(300.0, gt=0)
    broker_unreachable_exit_s: float = Field(120.0, gt=0)
    # On a fatal error /healthz fails for fatal_exit_delay_s before the worker stops (exit code 1);
    # a stop that hangs longer than fatal_exit_timeout_s ends the process at once.
    fatal_exit_delay_s: float = Field(2.0, ge=0)
    fatal_exit_timeout_s: float = Field(30.0, gt=0)
    # The served model inside the installed package; point elsewhere to classify with another artifact.
    artifact_dir: Path = SERVED_ARTIFACT
    model_repository: Path = MODEL_REPOSITORY  # what the local stack's tritonserver serves
    data_dir: Path = DEFAULT_DATA_DIR
    run_dir: Path = Path("var")
    triton_dist_dir: Path = Path("var") / "triton-dist"  # local tritonserver, prepared once and reused

    # Exposure (docs/SECURITY.md). A private CA bundle for the brokers' certificates (SSL, SASL_SSL);
    # without it the system trust store verifies them. Every Kafka client uses it (worker, topics, replay).
    kafka_ssl_cafile: Path | None = None
    # Where the local stack's tritonserver listens (HTTP, gRPC, metrics): loopback, so nothing off this
    # machine reaches it. Containers bind 0.0.0.0 and rely on the network policy instead.
    triton_bind_address: str = "127.0.0.1"
    # Dead letters keep an excerpt of the raw payload (PHI): the broker deletes them after this long.
    dead_letter_retention_hours: float = Field(72.0, gt=0)

    @model_validator(mode="after")
    def _stall_exit_after_stall(self) -> Settings:
        if self.stall_exit_s < self.stall_timeout_s:
            raise ValueError("stall_exit_s must be >= stall_timeout_s (not ready first, then exit)")
        return self

    def kafka_client_kwargs(self) -> dict:
        """Connection options in kafka-python's spelling (producers, admin, test consumers)."""
        kwargs: dict = {"bootstrap_servers": self.kafka_bootstrap.split(","),
                        "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_cafile is not None:
            kwargs["ssl_cafile"] = str(self.kafka_ssl_cafile)  # kafka-python verifies host names by default
        kwargs.update(self.kafka_sasl_kwargs())
        return kwargs

    def kafka_sasl_kwargs(self) -> dict:
        """SASL options, spelled the same by kafka-python and aiokafka; empty without SASL."""
        if not self.kafka_security_protocol.startswith("SASL"):
            return {}
        return {"sasl_mechanism": self.kafka_sasl_mechanism, "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": (self.kafka_sasl_password.get_secret_value()
                                        if self.kafka_sasl_password else None)}

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for SSL and SASL_SSL (the worker's aiokafka clients); None for plaintext."""
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        return ssl.create_default_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)

    def topic_configs(self) -> dict[str, dict[str, str]]:
        """Per-topic broker configs set when the topics are created (``homework-monitor topics``)."""
        retention_ms = int(self.dead_letter_retention_hours * 3600 * 1000)
        return {self.topics.dead_letter: {"retention.ms": str(retention_ms)}}

    def table_store_options(self) -> dict:
        """faust's RocksDB store options (``app.Table(options=...)``) for the settings above."""
        if self.table_store != "rocksdb":
            return {}
        mb = 1024 * 1024
        return {"write_buffer_size": self.table_write_buffer_mb * mb, "max_write_buffer_number": 2,
                "block_cache_size": self.table_block_cache_mb * mb,
                "block_cache_compressed_size": self.table_block_cache_mb * mb}

    def topic_partition_counts(self) -> dict[str, int]:
        t = self.topics
        return {t.utterances: self.topic_partitions, t.homework_events: self.topic_partitions,
                t.session_summaries: self.topic_partitions, t.nudges: self.topic_partitions,
                t.session_opened: self.topic_partitions, t.dead_letter: 1}

    # Table state (docs/RESTARTS.md). RocksDB keeps each worker's partitions on disk under
    # ``run_dir/faust-<worker_id>`` (a persistent volume in production): a restart reads only the
    # changelog written since; ``memory`` replays the whole changelog on every start.
    table_store: Literal["rocksdb", "memory"] = "rocksdb"
    # RocksDB memory per table partition: faust's defaults (3 memtables of 64 MB, a 2 GB block cache)
    # let a worker's RSS climb for hundreds of MB before the first flush. Small buffers flush the state
    # writes more often: part of the max-rate gain of the decoded-state cache goes (docs/SCALING.md §2),
    # nothing measurable at real pace (the soak in benchmarks/RESULTS.md).
    table_write_buffer_mb: int = Field(4, ge=1)
    table_block_cache_mb: int = Field(8, ge=1)
    # Workers that keep a warm copy of each table partition for fast failover (0: none).
    table_standby_replicas: int = Field(1, ge=0)
    # An ended session's tombstone (kept so late redeliveries are recognised) is deleted after this.
    retired_session_grace_s: float = Field(24 * 3600.0, gt=0)
    retired_session_check_interval_s: float = Field(60.0, gt=0)
    # A source partition whose next record did not arrive is read again every rewind interval; after
    # the gap timeout the log is taken to have no record there (reported as a gap).
    source_rewind_interval_s: float = Field(2.0, gt=0)
    source_gap_timeout_s: float = Field(30.0, gt=0)
