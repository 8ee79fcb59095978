"""Kafka TLS/SASL reach every client; secrets stay out of the services that do not need them."""
from __future__ import annotations

import ssl

import pytest

from homework_monitor.stream.config import Settings

PASSWORD = "hunter2-Xq9-very-secret"


@pytest.fixture
def ca_file(tmp_path):
    """A real CA certificate (the system bundle's first one), so ssl.create_default_context loads it."""
    import certifi  # comes with the test stack (requests/transformers)
    pem = open(certifi.where(), encoding="ascii").read()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    path = tmp_path / "ca.pem"
    path.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----"):end] + "\n")
    return path


@pytest.mark.parametrize("protocol, tls, sasl", [("PLAINTEXT", False, False), ("SSL", True, False),
                                                 ("SASL_PLAINTEXT", False, True), ("SASL_SSL", True, True)])
def test_client_kwargs_for_each_protocol(settings_factory, ca_file, protocol, tls, sasl):
    s = settings_factory(kafka_security_protocol=protocol, kafka_sasl_mechanism="SCRAM-SHA-256",
                         kafka_sasl_username="svc", kafka_sasl_password=PASSWORD, kafka_ssl_cafile=ca_file)
    kwargs = s.kafka_client_kwargs()
    assert kwargs["security_protocol"] == protocol
    assert kwargs["bootstrap_servers"] == ["127.0.0.1:1"]
    assert ("ssl_cafile" in kwargs) is tls
    if tls:
        assert kwargs["ssl_cafile"] == str(ca_file)
    sasl_keys = {k: v for k, v in kwargs.items() if k.startswith("sasl")}
    assert sasl_keys == ({"sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "svc",
                          "sasl_plain_password": PASSWORD} if sasl else {})
    ctx = s.kafka_ssl_context()
    assert (ctx is not None) is tls
    if ctx is not None:
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert ctx.cert_store_stats()["x509_ca"] == 1  # our CA file, not the system store


def test_ssl_without_a_ca_file_uses_the_system_store(settings_factory):
    s = settings_factory(kafka_security_protocol="SSL")
    assert "ssl_cafile" not in s.kafka_client_kwargs()
    assert s.kafka_ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_ca_file_from_the_environment(settings_factory, monkeypatch, ca_file):
    settings_factory()
    monkeypatch.setenv("HWM_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("HWM_KAFKA_SSL_CAFILE", str(ca_file))
    assert Settings(_env_file=None).kafka_client_kwargs()["ssl_cafile"] == str(ca_file)


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT", "PLAINTEXT"])
def test_worker_consumers_and_producers_use_the_protocol(settings_factory, ca_file, protocol):
    """The Faust app's aiokafka clients get TLS for SSL (they connected in plaintext before)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from homework_monitor.stream.app import create_app
    s = settings_factory(kafka_security_protocol=protocol, kafka_sasl_username="svc",
                         kafka_sasl_password=PASSWORD, kafka_ssl_cafile=ca_file)
    app = create_app(s, serve_metrics=False)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == protocol
    assert (auth.get("ssl_context") is not None) is protocol.endswith("SSL")
    if protocol.endswith("SSL"):
        assert auth["ssl_context"].cert_store_stats()["x509_ca"] == 1
    assert (auth.get("sasl_plain_password") == PASSWORD) is protocol.startswith("SASL")


def test_dead_letter_retention_is_a_setting(settings_factory):
    assert settings_factory().topic_configs() == {"dead-letter": {"retention.ms": str(72 * 3600 * 1000)}}
    assert settings_factory(dead_letter_retention_hours=1.5).topic_configs() == {
        "dead-letter": {"retention.ms": "5400000"}}
    with pytest.raises(ValueError):
        settings_factory(dead_letter_retention_hours=0)


def test_secrets_are_scrubbed_from_service_environments():
    from homework_monitor.deploy.services import scrubbed_environ
    env = {"HWM_KAFKA_SASL_PASSWORD": PASSWORD, "HWM_API_TOKEN": "t", "HWM_SOME_SECRET": "s",
           "GRAFANA_ADMIN_PASSWORD": "g", "AWS_SECRET_ACCESS_KEY": "a",
           "HWM_KAFKA_BOOTSTRAP": "k:9092", "TOKENIZERS_PARALLELISM": "false", "PATH": "/bin"}
    assert scrubbed_environ(env) == {"HWM_KAFKA_BOOTSTRAP": "k:9092", "TOKENIZERS_PARALLELISM": "false",
                                     "PATH": "/bin"}


def test_tritonserver_and_its_backend_get_no_broker_password(monkeypatch, tmp_path):
    """The environment handed to tritonserver (and so to the Python backend stub) has no secrets."""
    from homework_monitor.deploy.triton_runtime import prepare_triton_dist
    monkeypatch.setenv("HWM_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("HWM_ADMIN_TOKEN", PASSWORD)
    dist = prepare_triton_dist(Settings(_env_file=None).triton_dist_dir)
    assert PASSWORD not in "".join(f"{k}={v}" for k, v in dist.env.items())
    assert dist.env["PATH"]  # the rest is still there


def test_tritonserver_binds_loopback_and_restricts_admin_apis():
    from homework_monitor.deploy.triton_runtime import prepare_triton_dist, tritonserver_command
    s = Settings(_env_file=None)
    cmd = tritonserver_command(prepare_triton_dist(s.triton_dist_dir), s.model_repository, 1, 2, 3)
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in cmd
    http = [a for a in cmd if a.startswith("--http-restricted-api=")]
    grpc = [a for a in cmd if a.startswith("--grpc-restricted-protocol=")]
    assert len(http) == len(grpc) == 1
    assert http[0].split("=", 1)[1].startswith("logging,trace,model-repository,shared-memory:hwm-admin-key=")
    # A fresh random key per start: nobody can send it.
    again = tritonserver_command(prepare_triton_dist(s.triton_dist_dir), s.model_repository, 1, 2, 3)
    assert [a for a in again if a.startswith("--http-restricted-api=")] != http
