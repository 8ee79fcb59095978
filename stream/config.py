"""The one typed configuration shared by the worker, the producers and the CLI.

Every field can be set from the environment with the ``HWM_`` prefix (``HWM_KAFKA_BOOTSTRAP``,
``HWM_TRITON_URL``...) or a ``.env`` file. Secrets are ``SecretStr`` so they never print.
Defaults never depend on where the source tree is: paths are relative to the working directory
(``var``, ``../shared/data``) or come from the installed package's resources (the served model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    topic_partitions: int = Field(4, ge=1)
    app_id: str = "homework-monitor"
    worker_id: str = "worker-1"
    broker_session_timeout_s: float = 10.0  # tansu completes group joins only after half of it
    # tansu answers a fetch only when its max wait expires, even if data arrives meanwhile (measured:
    # p50 389 ms at 1500 ms vs 8 ms at 20 ms). Apache Kafka wakes on data; 500 is fine there.
    consumer_fetch_max_wait_ms: int = Field(20, ge=1)

    # Classifier service.
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = MODEL_NAME
    # CPU Triton needs ~1 s for a 32-microdialogue batch; a timeout retries the same slice.
    triton_timeout_s: float = Field(10.0, gt=0)
    triton_retries: int = Field(3, ge=0)  # for rejected requests; timeouts retry until served
    triton_backoff_s: float = Field(0.05, gt=0)
    triton_backoff_max_s: float = Field(5.0, gt=0)
    triton_max_batch: int = Field(16, ge=1)  # checked against the server's max_batch_size at start
    triton_max_inflight: int = Field(4, ge=1)

    # Stream processing.
    batch_size: int = Field(64, ge=1)
    batch_within_s: float = Field(0.01, gt=0)
    # Replay sends an utterance when it starts, so a long turn already looks like ~10 s of silence.
    silence_flush_s: float = Field(20.0, gt=0)
    silence_check_interval_s: float = Field(1.0, gt=0)
    max_text_chars: int = Field(4000, ge=1)
    context_turns: int = Field(3, ge=0)
    # Chosen on out-of-fold sessions_dev predictions (training/RESULTS.md, session sweep).
    event_threshold: float = Field(0.6, ge=0, le=1)

    metrics_port: int = 9100
    log_level: str = "INFO"
    # The served model inside the installed package; point elsewhere to classify with another artifact.
    artifact_dir: Path = SERVED_ARTIFACT
    model_repository: Path = MODEL_REPOSITORY  # what the local stack's tritonserver serves
    data_dir: Path = DEFAULT_DATA_DIR
    run_dir: Path = Path("var")
    triton_dist_dir: Path = Path("var") / "triton-dist"  # local tritonserver, prepared once and reused

    def kafka_client_kwargs(self) -> dict:
        """Connection options in kafka-python's spelling (producers, admin, test consumers)."""
        kwargs: dict = {"bootstrap_servers": self.kafka_bootstrap.split(","),
                        "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs.update(sasl_mechanism=self.kafka_sasl_mechanism,
                          sasl_plain_username=self.kafka_sasl_username,
                          sasl_plain_password=(self.kafka_sasl_password.get_secret_value()
                                               if self.kafka_sasl_password else None))
        return kwargs

    def topic_partition_counts(self) -> dict[str, int]:
        t = self.topics
        return {t.utterances: self.topic_partitions, t.homework_events: self.topic_partitions,
                t.session_summaries: self.topic_partitions, t.dead_letter: 1}

    # Table state (docs/RESTARTS.md). RocksDB keeps each worker's partitions on disk under
    # ``run_dir/faust-<worker_id>`` (a persistent volume in production): a restart reads only the
    # changelog written since; ``memory`` replays the whole changelog on every start.
    table_store: Literal["rocksdb", "memory"] = "rocksdb"
    # Workers that keep a warm copy of each table partition for fast failover (0: none).
    table_standby_replicas: int = Field(1, ge=0)
    # An ended session's tombstone (kept so late redeliveries are recognised) is deleted after this.
    retired_session_grace_s: float = Field(24 * 3600.0, gt=0)
    retired_session_check_interval_s: float = Field(60.0, gt=0)
    # A source partition whose next record did not arrive is read again every rewind interval; after
    # the gap timeout the log is taken to have no record there (reported as a gap).
    source_rewind_interval_s: float = Field(2.0, gt=0)
    source_gap_timeout_s: float = Field(30.0, gt=0)
