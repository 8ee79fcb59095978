"""How the worker app is wired into Faust: a module-level app, and a fetch wait scoped to this app."""
from __future__ import annotations

import aiokafka
import faust
import pytest

from homework_monitor.stream import app as app_module
from homework_monitor.stream.app import create_app


def test_module_level_app_for_faust_cli():
    """`faust -A homework_monitor.stream.app worker` finds an app with the monitor agent."""
    assert isinstance(app_module.app, faust.App)
    assert any(name.endswith(".monitor") for name in app_module.app.agents)


async def test_fetch_wait_applies_to_this_apps_consumers_only(settings_factory, fake_classifier):
    base_consumer = aiokafka.AIOKafkaConsumer
    app = create_app(settings_factory(consumer_fetch_max_wait_ms=37), fake_classifier, serve_metrics=False)
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 37
        assert type(consumer) is base_consumer  # a plain aiokafka consumer, nothing patched
    finally:
        await consumer.stop()
    assert aiokafka.AIOKafkaConsumer is base_consumer  # the library's class is untouched
    other = create_app(settings_factory(consumer_fetch_max_wait_ms=900, app_id="other"), fake_classifier,
                       serve_metrics=False)
    other_consumer = other.consumer._new_consumer_thread()._create_worker_consumer(other.transport)
    try:
        assert other_consumer._fetch_max_wait_ms == 900
    finally:
        await other_consumer.stop()


@pytest.mark.parametrize("protocol, tls", [("PLAINTEXT", False), ("SSL", True), ("SASL_PLAINTEXT", False),
                                           ("SASL_SSL", True)])
def test_every_security_protocol_reaches_the_kafka_clients(settings_factory, fake_classifier, protocol, tls):
    """What aiokafka gets from the worker's Faust app and from its broker probe (SSL used to be plaintext)."""
    import ssl

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from homework_monitor.stream.probes import aiokafka_client_kwargs
    settings = settings_factory(kafka_security_protocol=protocol, kafka_sasl_username="hwm",
                                kafka_sasl_password="not-a-real-secret")
    app = create_app(settings, fake_classifier, serve_metrics=False)
    for kwargs in (credentials_to_aiokafka_auth(app.conf.broker_credentials), aiokafka_client_kwargs(settings)):
        assert kwargs["security_protocol"] == protocol
        assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) is tls
        if tls:
            assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED and kwargs["ssl_context"].check_hostname
        assert (kwargs.get("sasl_plain_username") == "hwm") is protocol.startswith("SASL")


def test_probe_endpoint_serves_metrics_health_and_readiness_on_loopback():
    import json
    import urllib.error
    import urllib.request

    from homework_monitor.stream.health import HealthState
    from homework_monitor.stream.probes import serve_probes
    health = HealthState(stall_timeout_s=120.0, stall_exit_s=300.0, broker_unreachable_exit_s=60.0)
    now = [0.0]
    server = serve_probes("127.0.0.1", 0, health, clock=lambda: now[0])
    base = f"http://127.0.0.1:{server.server_port}"

    def get(path):
        try:
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    try:
        assert server.server_address[0] == "127.0.0.1"
        status, body = get("/metrics")
        assert status == 200 and "hwm_utterances_total" in body
        assert get("/healthz") == (200, json.dumps({"status": "ok", "reasons": []}))
        status, body = get("/readyz")
        assert status == 503 and "starting" in json.loads(body)["reasons"]
        health.fail("stalled")
        status, body = get("/healthz")
        assert status == 503 and json.loads(body) == {"status": "fail", "reasons": ["fatal"]}
        assert get("/nothing-here")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
