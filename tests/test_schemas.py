"""Wire schemas: the committed JSON Schema files stay in step with the models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from homework_monitor.stream.schemas import (
    CLASSES,
    HOMEWORK_CLASSES,
    INBOUND,
    NONE,
    SCHEMAS,
    SessionEnd,
    SilenceCheck,
    Utterance,
    export_json_schemas,
    stable_id,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMITTED = REPO_ROOT / "schemas"


def test_exported_schemas_equal_the_committed_files(tmp_path):
    written = export_json_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in COMMITTED.glob("*.schema.json")), (
        "schemas/ is stale: run `homework-monitor export-schemas`")
    for path in written:
        assert path.read_text() == (COMMITTED / path.name).read_text(), (
            f"{path.name} is stale: run `homework-monitor export-schemas`")


def test_every_model_has_a_schema_file(tmp_path):
    names = {p.name for p in export_json_schemas(tmp_path)}
    assert names == {f"{name}.schema.json" for name in SCHEMAS}
    for p in tmp_path.iterdir():
        assert json.loads(p.read_text())["type"] == "object"


def test_stable_id_is_deterministic_and_input_sensitive():
    a = stable_id("event", "s1", 4, "m/1")
    assert a == stable_id("event", "s1", 4, "m/1")
    assert len(a) == 24 and int(a, 16) >= 0
    assert a != stable_id("event", "s1", 5, "m/1")
    assert a != stable_id("event", "s1", "4", "m/1")  # types matter
    assert stable_id("a", "b") != stable_id("ab")


def test_classes_end_with_none():
    assert CLASSES[-1] == NONE and HOMEWORK_CLASSES == CLASSES[:-1]


def test_inbound_dispatches_on_type():
    assert isinstance(INBOUND.validate_python({"type": "silence_check", "session_id": "s", "at": 1}),
                      SilenceCheck)
    assert isinstance(INBOUND.validate_json(b'{"type":"session_end","session_id":"s","n_utterances":0}'),
                      SessionEnd)


def test_wire_models_are_frozen_and_strict():
    u = Utterance(session_id="s", seq=0, speaker="client", text="hello")
    with pytest.raises(ValidationError):
        u.text = "changed"
    with pytest.raises(ValidationError):
        Utterance(session_id="s", seq=0, speaker="client", text="x", mood="ok")


def test_utterance_round_trips_through_json():
    u = Utterance(session_id="s", seq=3, speaker="therapist", text="hi", start_s=1.0, therapist_id="t")
    assert INBOUND.validate_json(u.model_dump_json()) == u
