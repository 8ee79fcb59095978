"""`homework-monitor topics` on the real broker: the table changelog is compacted, reruns are harmless,
and a changelog that exists with another cleanup policy is refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from homework_monitor.deploy.broker import create_topics, tansu_command, topic_configs, wait_for_port
from homework_monitor.deploy.local_stack import all_topics, changelog_topic
from homework_monitor.deploy.services import ServiceStack, free_port
from homework_monitor.stream.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    port = free_port()
    with ServiceStack() as stack:
        stack.add("tansu", tansu_command("127.0.0.1", port), None, tmp_path / "tansu.log",
                  lambda: wait_for_port("127.0.0.1", port, 20))
        yield f"127.0.0.1:{port}"


def topics_cli(bootstrap: str, app_id: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HWM_KAFKA_BOOTSTRAP": bootstrap, "HWM_APP_ID": app_id}
    return subprocess.run([sys.executable, "-m", "homework_monitor.cli", "topics"], env=env, capture_output=True,
                          text=True, timeout=120)


def test_topics_creates_a_compacted_changelog_and_reruns_cleanly(broker):
    settings = Settings(kafka_bootstrap=broker, app_id="hwm-topics")
    for _ in range(2):
        res = topics_cli(broker, settings.app_id)
        assert res.returncode == 0, res.stderr[-2000:]
    printed = json.loads(res.stdout)
    changelog = changelog_topic(settings)
    assert printed["configs"] == {changelog: {"cleanup.policy": "compact"},
                                  settings.topics.dead_letter: {"retention.ms": str(72 * 3600 * 1000)}}
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        configs = topic_configs(admin, list(all_topics(settings)))
        described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(all_topics(settings)))}
    finally:
        admin.close()
    assert configs[changelog]["cleanup.policy"] == "compact"
    assert configs[settings.topics.utterances].get("cleanup.policy", "delete") == "delete"
    assert described == all_topics(settings)


def test_a_changelog_created_with_the_delete_policy_is_refused(broker):
    settings = Settings(kafka_bootstrap=broker, app_id="hwm-old")
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        admin.create_topics([NewTopic(changelog_topic(settings), settings.topic_partitions, 1,
                                      topic_configs={"cleanup.policy": "delete"})])
    finally:
        admin.close()
    with pytest.raises(ValueError, match="cleanup.policy: want compact, have delete"):
        create_topics(broker, all_topics(settings), configs={changelog_topic(settings): {"cleanup.policy": "compact"}})
