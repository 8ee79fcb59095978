"""The served CPU student (``training/pair_student.py``): one encoder pass, distilled from the teacher.

Soft-target training, the fold discipline of its evaluation, the export (swapped in whole, never half)
and the served layout: the CPU config serves the student, the GPU config the teacher, one encoder.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from homework_monitor.contract import CLASSES, Example
from homework_monitor.runtime import ModelSpec, OnnxClassifier
from homework_monitor.training import pair_student as ps
from homework_monitor.triton_models import MODEL_REPOSITORY, SERVED_ARTIFACT

EXAMPLES = [Example(therapist="Before next week, write down three moments you felt calm.", client="Okay."),
            Example(therapist="How are you feeling today?", client="Tired, honestly."),
            Example(therapist="Let's try the breathing together right now.", client=None)]


def _config_artifact(path) -> str:
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return config.parameters["artifact"].string_value


def test_the_student_learns_its_teacher_from_probabilities_alone():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    teacher = ps.softmax(X @ rng.normal(size=(16, len(CLASSES))) * 2.0)
    cfg = ps.StudentConfig(hidden=32, epochs=20, dropout=0.0)
    head = ps.fit_student(X[:2500], teacher[:2500], np.ones(2500), cfg)
    held_out = ps.student_logits(head, X[2500:]).argmax(1)
    assert (held_out == teacher[2500:].argmax(1)).mean() >= 0.9


def test_a_fold_learns_nothing_of_its_own_sessions():
    sessions = np.array([f"s{i % 10}" for i in range(50)])
    pool = ps.Pool(np.zeros((50, 4)), np.eye(len(CLASSES))[np.zeros(50, int)], np.ones(50), sessions,
                   np.array(["unit"] * 25 + ["added"] * 25))
    fold_of = {f"s{i}": i % 5 for i in range(10)}
    for k in range(5):
        train = pool.without_fold(fold_of, k)
        assert not any(fold_of[s] == k for s in train.sessions)
        assert len(train.sessions) == sum(fold_of[s] != k for s in sessions)


def test_the_cpu_config_serves_the_student_and_the_gpu_config_the_teacher():
    student = ModelSpec.load(SERVED_ARTIFACT)
    teacher_dir = ps.teacher_of(SERVED_ARTIFACT)
    teacher = ModelSpec.load(teacher_dir)
    assert student.views == ("pair",) and teacher.views == ("pair", "therapist")
    assert student.extra["teacher"] == teacher.version
    assert (teacher_dir / teacher.encoder).resolve() == (SERVED_ARTIFACT / student.encoder).resolve()
    model = MODEL_REPOSITORY / "homework_classifier"
    assert model / "1" / _config_artifact(model / "config.pbtxt") == SERVED_ARTIFACT
    assert model / "1" / _config_artifact(model / "configs" / "gpu.pbtxt") == teacher_dir
    for clf in (OnnxClassifier(SERVED_ARTIFACT), OnnxClassifier(teacher_dir)):
        p = clf.predict_proba(EXAMPLES)
        assert p.shape == (3, len(CLASSES)) and np.allclose(p.sum(1), 1.0, atol=1e-5)


def _data(teacher: OnnxClassifier, dim: int) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    y = rng.integers(0, len(CLASSES), 64)
    pool = ps.Pool(rng.normal(size=(64, dim)).astype(np.float32), np.eye(len(CLASSES))[y], np.ones(64),
                   np.array(["s"] * 64), np.array(["added"] * 64))
    return SimpleNamespace(teacher=teacher, pool=pool, data_hash="0123456789abcdef")


EVALUATION = {"served": {"temperature": 1.25, "pooled": {"macro_f1": 0.5}, "session": {"sessions": 0}}}


def test_export_writes_a_student_beside_its_teacher_sharing_one_encoder(tmp_path):
    teacher_dir = ps.teacher_of(SERVED_ARTIFACT)
    teacher = OnnxClassifier(teacher_dir)
    out = tmp_path / "artifact"
    ps.export(_data(teacher, teacher.spec.hidden), ps.StudentConfig(epochs=1), EVALUATION, teacher_dir, out)
    student = OnnxClassifier(out)
    assert student.spec.views == ("pair",) and student.spec.temperature == 1.25
    assert student.spec.version == "minilm_pair_student-01234567"
    assert json.loads((out / ps.TEACHER_DIR / "model.json").read_text())["encoder"] == "../encoder"
    assert not (out / ps.TEACHER_DIR / "encoder").exists()  # one copy of the encoder
    copied = OnnxClassifier(out / ps.TEACHER_DIR)
    assert np.array_equal(copied.predict_proba(EXAMPLES), teacher.predict_proba(EXAMPLES))


def test_a_failed_export_leaves_the_served_artifact_as_it_was(tmp_path):
    teacher_dir = ps.teacher_of(SERVED_ARTIFACT)
    teacher = OnnxClassifier(teacher_dir)
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "model.json").write_text("{}")
    with pytest.raises(ValueError, match="head shapes"):  # a head that does not fit the encoder
        ps.export(_data(teacher, 10), ps.StudentConfig(epochs=1), EVALUATION, teacher_dir, out)
    assert (out / "model.json").read_text() == "{}"
