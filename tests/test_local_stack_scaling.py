"""Scaling settings of the local stack: worker count, Triton instances, how a group's split is read.

The real thing (workers in one group on a real broker) is tests/integration/test_horizontal.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from homework_monitor.deploy.local_stack import (
    assigned_partitions,
    served_repository,
    wait_for_group,
    worker_ids,
)
from homework_monitor.deploy.triton_runtime import (
    configured_artifact,
    configured_instances,
    repository_with_instances,
)
from homework_monitor.stream.config import Settings


def test_defaults_are_one_worker_one_instance_four_partitions(settings_factory):
    s = settings_factory()
    assert (s.local_workers, s.triton_instances, s.topic_partitions) == (1, 1, 4)
    assert configured_instances(s.model_repository) == [1]
    assert served_repository(s) == s.model_repository  # the packaged repository, untouched


def test_scaling_settings_come_from_the_environment(settings_factory, monkeypatch):
    settings_factory()
    monkeypatch.setenv("HWM_LOCAL_WORKERS", "3")
    monkeypatch.setenv("HWM_TRITON_INSTANCES", "2")
    monkeypatch.setenv("HWM_TOPIC_PARTITIONS", "8")
    s = Settings(_env_file=None)
    assert (s.local_workers, s.triton_instances, s.topic_partitions) == (3, 2, 8)
    assert worker_ids(s.local_workers) == ["worker-1", "worker-2", "worker-3"]
    monkeypatch.setenv("HWM_LOCAL_WORKERS", "0")
    with pytest.raises(ValueError):
        Settings(_env_file=None)


@pytest.mark.parametrize("config_name", [None, "gpu"])
def test_repository_with_instances_changes_only_the_instance_count(tmp_path, config_name):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    source = Settings(_env_file=None).model_repository
    dest = repository_with_instances(source, tmp_path / "repo", 3, config_name)
    assert configured_instances(dest, config_name) == [3]

    def parsed(repo: Path):
        path = repo / "homework_classifier" / ("config.pbtxt" if config_name is None else f"configs/{config_name}.pbtxt")
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        kinds = [g.kind for g in config.instance_group]
        del config.instance_group[:]
        return config, kinds
    assert parsed(dest) == parsed(source)  # kinds, batching, warmup, parameters: all as they were
    model = dest / "homework_classifier"
    assert (model / "1").is_symlink() and (model / "1" / "model.py").is_file()  # the artifact is linked
    assert (model / "warmup").is_symlink()


def test_served_repository_follows_the_setting(settings_factory):
    s = settings_factory(triton_instances=2)
    repo = served_repository(s)
    assert repo.is_relative_to(s.run_dir.resolve()) and configured_instances(repo) == [2]


class _Proc:
    def __init__(self, log_path: Path, running: bool = True):
        self.log_path, self.is_running = log_path, running


def _stack(tmp_path: Path, logs: dict[str, list[str]], stopped=()) -> dict[str, _Proc]:
    procs = {}
    for name, lines in logs.items():
        (tmp_path / f"{name}.log").write_text("".join(f"x INFO partitions assigned: utterances {x}\n" for x in lines))
        procs[name] = _Proc(tmp_path / f"{name}.log", running=name not in stopped)
    return procs


def test_the_latest_assignment_line_counts(tmp_path):
    stack = _stack(tmp_path, {"worker-1": ["[0, 1, 2, 3]", "[0, 2]"], "worker-2": ["[]"]})
    assert assigned_partitions(stack["worker-1"].log_path) == [0, 2]
    assert assigned_partitions(stack["worker-2"].log_path) == []
    assert assigned_partitions(tmp_path / "none.log") is None


def test_a_group_is_settled_when_running_workers_split_every_partition_once(tmp_path):
    settled = _stack(tmp_path, {"worker-1": ["[0, 2]"], "worker-2": ["[1, 3]"], "worker-3": ["[0, 1]"]},
                     stopped={"worker-3"})
    assert wait_for_group(settled, list(settled), 4, 0) == {"worker-1": [0, 2], "worker-2": [1, 3]}
    rebalancing = _stack(tmp_path, {"worker-1": ["[0, 1, 2, 3]"], "worker-2": ["[1, 3]"]})  # an overlap
    with pytest.raises(TimeoutError):
        wait_for_group(rebalancing, list(rebalancing), 4, 0)
    not_yet = _stack(tmp_path, {"worker-1": ["[0, 1, 2, 3]"], "worker-2": ["[]"]})  # one idle, partitions to spare
    with pytest.raises(TimeoutError):
        wait_for_group(not_yet, list(not_yet), 4, 0)


def test_the_student_is_served_by_one_setting(settings_factory, monkeypatch):
    monkeypatch.setenv("HWM_TRITON_ARTIFACT", "artifact/student")
    s = settings_factory()
    repo = served_repository(s)
    assert repo != s.model_repository and configured_artifact(s.model_repository) == "artifact"
    assert configured_artifact(repo) == "artifact/student" and configured_instances(repo) == [1]
    assert (repo / "homework_classifier" / "1" / "artifact" / "student" / "model.json").is_file()
    monkeypatch.setenv("HWM_TRITON_ARTIFACT", "artifact/v2_head")  # the two-view head on every label
    assert configured_artifact(served_repository(settings_factory())) == "artifact/v2_head"


def test_an_artifact_that_is_not_there_refuses_to_start(settings_factory, monkeypatch):
    monkeypatch.setenv("HWM_TRITON_ARTIFACT", "artifact/nothing")
    with pytest.raises(ValueError, match="artifact/nothing"):
        served_repository(settings_factory())
    monkeypatch.setenv("HWM_TRITON_ARTIFACT", "../../etc")  # a folder of the version folder, nothing else
    with pytest.raises(ValueError):
        settings_factory()
