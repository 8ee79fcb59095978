"""Heads on the served encoder (``training/pair_student.py``): the one-pass student and the two-view v2
head, both distilled from the served model (the teacher) and taught the labels it never saw.

Soft-target training, the fold discipline of its evaluation, the export (a head that does not load
replaces nothing) and the layout: one encoder, read by the teacher and both heads beside it.
"""
from __future__ import annotations

import json
import shutil
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
    cfg = ps.StudentConfig(head=ps.HeadConfig(hidden=32, epochs=20, dropout=0.0, batch_size=128))
    head = ps.fit_student(X[:2500], teacher[:2500], np.ones(2500), cfg)
    held_out = ps.student_logits(head, X[2500:]).argmax(1)
    assert (held_out == teacher[2500:].argmax(1)).mean() >= 0.9


def test_a_fold_learns_nothing_of_its_own_sessions():
    sessions = np.array([f"s{i % 10}" for i in range(50)])
    pool = ps.Pool(ps.Features(np.zeros((50, 4)), np.zeros((50, 4))), np.eye(len(CLASSES))[np.zeros(50, int)], np.ones(50), sessions,
                   np.array(["unit"] * 25 + ["added"] * 25))
    fold_of = {f"s{i}": i % 5 for i in range(10)}
    for k in range(5):
        train = pool.without_fold(fold_of, k)
        assert not any(fold_of[s] == k for s in train.sessions)
        assert len(train.sessions) == sum(fold_of[s] != k for s in sessions)


def test_one_encoder_read_by_the_teacher_and_both_heads_beside_it():
    teacher = ModelSpec.load(SERVED_ARTIFACT)
    student_dir, v2_dir = SERVED_ARTIFACT / ps.STUDENT_DIR, SERVED_ARTIFACT / ps.V2_HEAD_DIR
    student, v2 = ModelSpec.load(student_dir), ModelSpec.load(v2_dir)
    assert teacher.views == v2.views == ("pair", "therapist") and student.views == ("pair",)
    assert student.extra["teacher"] == v2.extra["teacher"] == teacher.version == "minilm_finetuned-d6b40da5"
    assert v2.version.startswith("minilm_v2_head-")
    encoder = (SERVED_ARTIFACT / teacher.encoder).resolve()
    assert (student_dir / student.encoder).resolve() == (v2_dir / v2.encoder).resolve() == encoder
    assert not (student_dir / "encoder").exists() and not (v2_dir / "encoder").exists()  # one copy
    model = MODEL_REPOSITORY / "homework_classifier"
    assert model / "1" / _config_artifact(model / "config.pbtxt") == SERVED_ARTIFACT  # the default
    for clf in (OnnxClassifier(SERVED_ARTIFACT), OnnxClassifier(student_dir), OnnxClassifier(v2_dir)):
        p = clf.predict_proba(EXAMPLES)
        assert p.shape == (3, len(CLASSES)) and np.allclose(p.sum(1), 1.0, atol=1e-5)


def _data(teacher: OnnxClassifier, dim: int) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    y = rng.integers(0, len(CLASSES), 64)
    feats = ps.Features(*(rng.normal(size=(64, dim)).astype(np.float32) for _ in range(2)))
    pool = ps.Pool(feats, np.eye(len(CLASSES))[y], np.ones(64),
                   np.array(["s"] * 64), np.array(["added"] * 64))
    return SimpleNamespace(teacher=teacher, pool=pool, data_hash="0123456789abcdef")


FIGURES = {"temperature": 1.25, "pooled": {"macro_f1": 0.5}, "session": {"sessions": 0}, "turns": {"precision": 0.5}}
FAST = ps.HeadConfig(epochs=1)


@pytest.fixture
def teacher_copy(tmp_path):
    """The served artifact (encoder, teacher, heads) in a folder the test may write into."""
    dest = tmp_path / "artifact"
    shutil.copytree(SERVED_ARTIFACT, dest, ignore=shutil.ignore_patterns(ps.STUDENT_DIR, ps.V2_HEAD_DIR))
    return dest


def test_export_writes_the_student_and_the_v2_head_beside_the_teacher(teacher_copy):
    teacher = OnnxClassifier(teacher_copy)
    before = teacher.predict_proba(EXAMPLES)
    data = _data(teacher, teacher.spec.hidden)
    out = ps.export(data, ps.StudentConfig(head=FAST), FIGURES, teacher_copy, ps.STUDENT_DIR, "minilm_pair_student")
    assert out == teacher_copy / ps.STUDENT_DIR
    student = OnnxClassifier(out)
    assert student.spec.views == ("pair",) and student.spec.temperature == 1.25
    assert student.spec.version == "minilm_pair_student-01234567"
    assert json.loads((out / "model.json").read_text())["encoder"] == "../encoder"
    v2 = ps.export(data, ps.StudentConfig(head=FAST, views=ps.TWO_VIEWS), FIGURES, teacher_copy, ps.V2_HEAD_DIR,
                   "minilm_v2_head")
    assert v2 == teacher_copy / ps.V2_HEAD_DIR and not list(teacher_copy.glob("*.staging"))
    head = OnnxClassifier(v2)
    assert head.spec.views == ps.TWO_VIEWS and head.spec.version == "minilm_v2_head-01234567"
    assert json.loads((v2 / "model.json").read_text())["encoder"] == "../encoder"
    assert np.array_equal(OnnxClassifier(teacher_copy).predict_proba(EXAMPLES), before)  # teacher untouched


def test_a_failed_export_leaves_the_previous_head_as_it_was(teacher_copy):
    teacher = OnnxClassifier(teacher_copy)
    previous = teacher_copy / ps.STUDENT_DIR
    previous.mkdir()
    (previous / "model.json").write_text("{}")
    with pytest.raises(ValueError, match="head shapes"):  # a head that does not fit the encoder
        ps.export(_data(teacher, 10), ps.StudentConfig(head=FAST), FIGURES, teacher_copy, ps.STUDENT_DIR, "x")
    assert (previous / "model.json").read_text() == "{}"
    assert not list(teacher_copy.glob("*.staging"))


def test_the_student_is_put_on_its_teachers_probability_scale():
    from homework_monitor.training.head import fit_temperature_to
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(500, len(CLASSES))) * 3
    teacher = ps.softmax(logits, 2.0)  # the same ranking, twice as soft
    assert abs(fit_temperature_to(logits, teacher) - 2.0) < 0.05


def test_the_soft_labels_are_the_served_models_probabilities(tmp_path):
    teacher = OnnxClassifier(SERVED_ARTIFACT)
    cache = ps.EmbeddingCache(teacher, tmp_path / "embeddings.npz")
    feats = ps.features(cache, EXAMPLES)
    soft = ps.softmax(feats.teacher_logits(teacher), teacher.spec.temperature)
    assert np.allclose(soft, teacher.predict_proba(EXAMPLES), atol=1e-5)
    again = ps.features(ps.EmbeddingCache(teacher, tmp_path / "embeddings.npz"), EXAMPLES)  # from disk
    assert np.array_equal(again.pair, feats.pair)


def test_model_drawn_items_are_scored_apart_as_a_weighted_sample():
    """Items drawn where the models fire count only in the population estimate, each by its stratum's
    pool / drawn; the others are the labelled items every table scores."""
    none, act = CLASSES.index("none"), CLASSES.index("take_action")
    data = SimpleNamespace(added_y=np.array([act, none, act, none]), drawn_weight=np.array([0.0, 0.0, 1.0, 30.0]),
                           added=[SimpleNamespace(why=w) for w in (None, None, "fires", "random")])
    fired = np.eye(len(CLASSES))[[act, act, act, act]]  # the model fires on all four (p = 1)
    est = ps.population_events(data, fired, 0.6)
    assert est["n"] == 2 and est["population"] == 31.0
    assert (est["precision"], est["recall"]) == pytest.approx((1 / 31, 1.0))
    # One item per stratum: every resample is the sample itself, so the interval is the estimate.
    assert est["interval_90"]["precision"] == pytest.approx([1 / 31, 1 / 31])
    assert ps.population_events(SimpleNamespace(added_y=data.added_y, drawn_weight=np.zeros(4)), fired, 0.6) is None


def test_the_interval_resamples_each_stratum_within_itself():
    # Stratum "a" (weight 1) always fires right; stratum "b" (weight 10) is where the misses are.
    truth = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    fired = np.array([1, 1, 0, 0, 0, 0, 1], bool)
    weight = np.array([1, 1, 1, 10, 10, 10, 10.0])
    stratum = np.array(["a", "a", "a", "b", "b", "b", "b"])
    est = ps.stratified_interval(truth, fired, weight, stratum, reps=500)
    point = ps.weighted_binary_metrics(truth, fired, weight)
    for k in ("precision", "recall"):
        lo, hi = est[k]
        assert 0.0 <= lo <= point[k] <= hi <= 1.0
    assert est["precision"][0] < est["precision"][1]  # stratum b varies between resamples
