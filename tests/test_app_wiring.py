"""How the worker app is wired into Faust: a module-level app, and a fetch wait scoped to this app."""
from __future__ import annotations

import aiokafka
import faust

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
