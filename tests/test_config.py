"""Typed settings: environment overrides, secrets that never print, Kafka client options."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from homework_monitor.stream.config import Settings

PASSWORD = "hunter2-Xq9-very-secret"


def test_defaults_need_no_environment(settings_factory):
    s = settings_factory()
    assert s.kafka_bootstrap == "127.0.0.1:1"
    assert s.topics.utterances == "utterances"
    assert s.kafka_sasl_password is None


def test_hwm_environment_variables_override(settings_factory, monkeypatch):
    settings_factory()  # clears any HWM_ variables of the caller
    monkeypatch.setenv("HWM_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("HWM_CONTEXT_TURNS", "5")
    monkeypatch.setenv("HWM_EVENT_THRESHOLD", "0.75")
    monkeypatch.setenv("HWM_TRITON_URL", "triton:8001")
    s = Settings(_env_file=None)
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert (s.context_turns, s.event_threshold, s.triton_url) == (5, 0.75, "triton:8001")
    assert s.kafka_client_kwargs()["bootstrap_servers"] == ["k1:9092", "k2:9092"]


def test_topic_names_from_the_environment(settings_factory, monkeypatch):
    settings_factory()
    monkeypatch.setenv("HWM_TOPIC_DEAD_LETTER", "dlq")
    monkeypatch.setenv("HWM_TOPICS__UTTERANCES", "utts-v2")
    s = Settings(_env_file=None)
    assert s.topics.dead_letter == "dlq"
    assert s.topics.utterances == "utts-v2"


def test_invalid_environment_values_are_rejected(settings_factory, monkeypatch):
    settings_factory()
    monkeypatch.setenv("HWM_EVENT_THRESHOLD", "1.5")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_keyword_overrides_win(settings_factory):
    assert settings_factory(batch_size=7).batch_size == 7


def test_password_never_appears_in_repr_or_str(settings_factory):
    s = settings_factory(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc",
                         kafka_sasl_password=PASSWORD)
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)
    assert PASSWORD not in s.model_dump_json()
    assert s.kafka_sasl_password.get_secret_value() == PASSWORD


def test_password_from_the_environment_stays_secret(settings_factory, monkeypatch):
    settings_factory()
    monkeypatch.setenv("HWM_KAFKA_SASL_PASSWORD", PASSWORD)
    s = Settings(_env_file=None)
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)


def test_plaintext_client_kwargs_have_no_sasl_fields(settings_factory):
    kwargs = settings_factory(kafka_sasl_username="svc", kafka_sasl_password=PASSWORD).kafka_client_kwargs()
    assert kwargs == {"bootstrap_servers": ["127.0.0.1:1"], "security_protocol": "PLAINTEXT"}


def test_ssl_client_kwargs_have_no_sasl_fields(settings_factory):
    kwargs = settings_factory(kafka_security_protocol="SSL").kafka_client_kwargs()
    assert not any(k.startswith("sasl") for k in kwargs)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_client_kwargs_carry_the_credentials(settings_factory, protocol):
    s = settings_factory(kafka_security_protocol=protocol, kafka_sasl_mechanism="SCRAM-SHA-512",
                         kafka_sasl_username="svc", kafka_sasl_password=PASSWORD)
    kwargs = s.kafka_client_kwargs()
    assert kwargs["security_protocol"] == protocol
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "svc", PASSWORD)


def test_sasl_without_password_passes_none(settings_factory):
    kwargs = settings_factory(kafka_security_protocol="SASL_PLAINTEXT").kafka_client_kwargs()
    assert kwargs["sasl_plain_password"] is None


def test_dead_letter_topic_has_one_partition(settings_factory):
    counts = settings_factory(topic_partitions=6).topic_partition_counts()
    assert counts == {"utterances": 6, "homework-events": 6, "session-summaries": 6, "nudges": 6,
                      "session-opened": 6, "dead-letter": 1}


def test_rocksdb_memory_is_bounded_by_settings(settings_factory, monkeypatch):
    monkeypatch.setenv("HWM_TABLE_WRITE_BUFFER_MB", "2")
    opts = settings_factory().table_store_options()
    assert opts["write_buffer_size"] == 2 * 1024 * 1024 and opts["max_write_buffer_number"] == 2
    assert opts["block_cache_size"] == 8 * 1024 * 1024
    assert settings_factory(table_store="memory").table_store_options() == {}


def test_the_worker_opens_its_tables_with_those_options(settings_factory, tmp_path):
    from homework_monitor.stream.app import create_app
    app = create_app(settings_factory(run_dir=tmp_path), serve_metrics=False)
    for table in (app.sessions_table, app.client_history_table):
        assert table.data.rocksdb_options.write_buffer_size == 4 * 1024 * 1024
        assert table.data.rocksdb_options.block_cache_size == 8 * 1024 * 1024


@pytest.mark.parametrize(("choice", "loop_module"), [("uvloop", "uvloop"), ("asyncio", "asyncio.unix_events")])
def test_the_worker_runs_on_the_event_loop_its_settings_name(settings_factory, choice, loop_module):
    import asyncio

    from homework_monitor.stream.app import use_event_loop
    before = asyncio.get_event_loop_policy()
    try:
        use_event_loop(settings_factory(event_loop=choice))
        loop = asyncio.new_event_loop()  # how faust's consumer thread gets its own
        assert type(loop).__module__ == loop_module
        loop.close()
    finally:
        asyncio.set_event_loop_policy(before)


def test_an_unknown_event_loop_is_refused(settings_factory, monkeypatch):
    monkeypatch.setenv("HWM_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError):
        settings_factory()


def test_the_worker_batches_its_fetches_and_produce_requests_as_set(settings_factory, tmp_path):
    from homework_monitor.stream.app import create_app
    app = create_app(settings_factory(run_dir=tmp_path, producer_linger_s=0.01, consumer_max_poll_records=500),
                     serve_metrics=False)
    assert app.conf.producer_linger == 0.01 and app.producer.linger_ms == 10
    assert app.conf.broker_max_poll_records == 500
