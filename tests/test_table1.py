"""Table 1: the metrics on hand-made arrays, and the whole command (+ export) on the small fixture."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from homework_monitor.stream.schemas import CLASSES
from homework_monitor.training import export, table1
from homework_monitor.training.data import load_labeled_data
from homework_monitor.training.metrics import classification_metrics, session_metrics

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


# --- metrics --------------------------------------------------------------------------------------
def test_classification_metrics_exact():
    #            practice take_action journal learn none none
    y_true = np.array([0, 1, 2, 3, 4, 4])
    y_pred = np.array([0, 1, 2, 4, 4, 0])
    m = classification_metrics(y_true, y_pred)
    assert set(m) == {f"f1_{c}" for c in CLASSES} | {"macro_f1", "homework_f1"}
    assert m["f1_practice"] == pytest.approx(2 / 3)  # P 1/2, R 1
    assert m["f1_take_action"] == pytest.approx(1.0)
    assert m["f1_journal"] == pytest.approx(1.0)
    assert m["f1_learn"] == pytest.approx(0.0)
    assert m["f1_none"] == pytest.approx(0.5)  # P 1/2, R 1/2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 1 + 0 + 0.5) / 5)
    # homework vs none: truth HHHHNN, predicted HHHNNH -> tp 3, fp 1, fn 1
    assert m["homework_f1"] == pytest.approx(0.75)


def test_classification_metrics_perfect_and_absent_classes():
    y = np.array([0, 4, 4, 1])
    m = classification_metrics(y, y)
    assert m["f1_practice"] == m["f1_take_action"] == m["f1_none"] == 1.0
    # classes absent from both truth and prediction score 0 and still count in the macro average
    assert m["f1_journal"] == m["f1_learn"] == 0.0
    assert m["macro_f1"] == pytest.approx(3 / 5)
    assert m["homework_f1"] == 1.0
    assert classification_metrics(np.array([4, 4]), np.array([4, 4]))["homework_f1"] == 0.0


def test_session_metrics_exact():
    truth = {"a": True, "b": True, "c": False, "d": False, "e": None, "f": True}
    predicted = {"a": True, "b": False, "c": True, "d": False, "e": True, "g": True}
    # scored: a b c d (e has no truth, f no prediction, g no truth)
    assert session_metrics(truth, predicted) == {"sessions": 4, "accuracy": 0.5, "precision": 0.5, "recall": 0.5}
    assert session_metrics({"a": True, "b": False}, {"a": True, "b": False}) == {
        "sessions": 2, "accuracy": 1.0, "precision": 1.0, "recall": 1.0}
    # nothing predicted positive, nothing truly positive: no division by zero
    assert session_metrics({"a": False}, {"a": False}) == {
        "sessions": 1, "accuracy": 1.0, "precision": 0.0, "recall": 0.0}


@pytest.mark.parametrize("truth,predicted", [({"a": True}, {}), ({"a": None}, {"a": True}), ({}, {})])
def test_session_metrics_with_no_scored_session(truth, predicted):
    """Regression: with no scored session, np.array([]) was float and `t & p` raised TypeError."""
    assert session_metrics(truth, predicted) == {"sessions": 0, "accuracy": 0.0, "precision": 0.0, "recall": 0.0}


def test_row_result_json_round_trip():
    r = table1.RowResult("x", np.arange(10.0).reshape(2, 5) / 7, np.zeros((0, 5)), 1.5, "here", {"k": 1},
                         data_hash="abc")
    back = table1.RowResult.from_json(json.loads(json.dumps(r.to_json())))
    np.testing.assert_allclose(back.item_logits, r.item_logits, atol=1e-5)
    assert back.session_logits.shape == (0, 5)
    assert (back.name, back.seconds, back.where, back.notes, back.data_hash) == ("x", 1.5, "here", {"k": 1}, "abc")


# --- the Table 1 command on the fixture --------------------------------------------------------
def _fast_smoke() -> table1.Table1Config:
    """The smoke config with fewer pretraining/fine-tuning steps, so the test stays well under a minute."""
    s = table1.CONFIGS["smoke"]
    return replace(s, pretrain=replace(s.pretrain, steps=1, batch_size=4, max_units=40),
                   finetune=replace(s.finetune, max_steps=1))


@pytest.fixture(scope="module")
def table1_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    paths = {"results": root / "results", "work": root / "work", "output": root / "RESULTS.md"}
    with pytest.MonkeyPatch.context() as mp:
        # export.py imports the same CONFIGS dict, so both commands see the trimmed config
        mp.setitem(table1.CONFIGS, "smoke", _fast_smoke())
        results = table1.main(["--config", "smoke", "--data-dir", str(FIXTURES),
                               "--results-dir", str(paths["results"]), "--work-dir", str(paths["work"]),
                               "--output", str(paths["output"])])
        yield paths, results, mp


@pytest.mark.slow
def test_table1_end_to_end_on_fixture(table1_run):
    paths, results, _ = table1_run
    assert list(results) == list(table1.ROWS)
    md = paths["output"].read_text()
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| model")
                   and not line.startswith("| threshold") and not line.startswith("| 0.")]
    assert len(table_lines) == 6
    for row, line in zip(table1.ROWS, table_lines):
        assert line.startswith(f"| {table1.ROW_TITLES[row]} |")
        assert len(line.strip("|").split("|")) == 15  # every column filled
    data_hash = load_labeled_data(FIXTURES).data_hash
    assert f"`{data_hash}`" in md
    assert "smoke config" in md and "3-fold" in md and "60 REAL items" in md
    assert "## Session-level decision rule" in md

    js = json.loads(paths["output"].with_suffix(".json").read_text())
    assert js["config"] == "smoke" and js["data_hash"] == data_hash
    assert set(js["rows"]) == set(table1.ROWS) and js["best"] in table1.ROWS
    assert js["best"] == max(js["rows"], key=lambda r: js["rows"][r]["pooled"]["macro_f1"])
    assert [s["threshold"] for s in js["session_sweep"]] == pytest.approx(np.arange(0.3, 0.96, 0.05))
    for r in js["rows"].values():
        assert all(0.0 <= v <= 1.0 for v in r["pooled"].values())
        assert r["session"]["sessions"] == 6  # every sessions_dev session of the fixture is scored
        assert r["temperature"] > 0 and 0.0 <= r["ece"] <= 1.0

    # every row's out-of-fold logits are cached, one per real item and one per session microdialogue
    for row in table1.ROWS:
        res = table1.RowResult.from_json(json.loads((paths["results"] / f"{row}.json").read_text()))
        assert res.item_logits.shape == (60, 5) and res.session_logits.shape == (38, 5)
        assert np.isfinite(res.item_logits).all()
        assert (np.abs(res.item_logits).sum(1) > 0).all()  # every item got an out-of-fold prediction
    for sub in ("tsdae_only", "tsdae_nsp"):
        report = json.loads((paths["work"] / "smoke" / sub / "pretrain.json").read_text())
        assert report["steps"] == 1
        assert report["config"]["nsp_weight"] == (0.0 if sub == "tsdae_only" else 1.0)


@pytest.mark.slow
def test_table1_rerun_uses_cached_rows(table1_run, tmp_path):
    paths, results, _ = table1_run
    again = table1.main(["--config", "smoke", "--data-dir", str(FIXTURES), "--rows", "tfidf_lr,tsdae_nsp",
                         "--results-dir", str(paths["results"]), "--work-dir", str(paths["work"]),
                         "--output", str(tmp_path / "R.md")])
    for row in ("tfidf_lr", "tsdae_nsp"):
        assert again[row]["pooled"] == results[row]["pooled"]
        assert again[row]["temperature"] == results[row]["temperature"]


@pytest.mark.slow
def test_export_best_row_makes_a_loadable_artifact(table1_run, tmp_path, capsys):
    paths, results, _ = table1_run
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "stale.txt").write_text("from an older export")  # replaced as a whole
    capsys.readouterr()
    export.main(["--row", "best", "--config", "smoke", "--data-dir", str(FIXTURES),
                 "--results-dir", str(paths["results"]), "--work-dir", str(paths["work"]), "--out", str(out)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = max(table1.ENCODER_ROWS, key=lambda r: results[r]["pooled"]["macro_f1"])
    assert printed["row"] == best and Path(printed["artifact"]) == out
    assert printed["macro_f1"] == pytest.approx(results[best]["pooled"]["macro_f1"])

    spec = json.loads((out / "model.json").read_text())
    assert spec["classes"] == list(CLASSES)
    assert spec["extra"]["row"] == best
    assert spec["extra"]["data_hash"] == load_labeled_data(FIXTURES).data_hash
    assert spec["version"].startswith(best + "-")
    assert spec["temperature"] == pytest.approx(results[best]["temperature"], abs=1e-4)
    assert (out / "head.safetensors").exists() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no staging folder left behind
    assert (spec["encoder"] == "encoder") == (best != "minilm_frozen")

    from homework_monitor.model import Example, HomeworkClassifier
    clf = HomeworkClassifier(out)
    assert clf.version == spec["version"]
    probs = clf.predict_proba([
        Example("Please keep a sleep diary every morning this week.", "Okay."),
        Example("How are you feeling today?", None),
        Example("Try the exercise once a day.", "Sure.", (("client", "I'm stressed."), ("therapist", "I hear you."))),
    ])
    assert probs.shape == (3, 5) and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert clf.predict_proba([]).shape == (0, 5)


def test_export_non_encoder_row_keeps_existing_artifact(tmp_path):
    """Regression: export deleted --out (by default the served artifact) before rejecting the row."""
    rng = np.random.default_rng(0)
    res = table1.RowResult("tfidf_lr", rng.normal(size=(60, 5)), rng.normal(size=(38, 5)), 0.1, "test",
                           data_hash=load_labeled_data(FIXTURES).data_hash)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tfidf_lr.json").write_text(json.dumps(res.to_json()))
    out = tmp_path / "served"
    out.mkdir()
    (out / "model.json").write_text("{}")
    with pytest.raises(SystemExit, match="is not an encoder row"):
        export.main(["--row", "tfidf_lr", "--config", "smoke", "--data-dir", str(FIXTURES),
                     "--results-dir", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
                     "--out", str(out)])
    assert (out / "model.json").exists()


def test_table1_without_session_corpora(tmp_path):
    """Regression: no sessions_dev session in the corpora crashed session_metrics."""
    data = tmp_path / "data"
    (data / "labeled").mkdir(parents=True)
    shutil.copy(FIXTURES / "labeled" / "real_dev.jsonl", data / "labeled" / "real_dev.jsonl")
    (data / "labeled" / "sessions_dev.jsonl").write_text(json.dumps({"session_id": "elsewhere", "homework": True}) + "\n")
    results = table1.main(["--config", "smoke", "--data-dir", str(data), "--rows", "tfidf_lr",
                           "--results-dir", str(tmp_path / "res"), "--work-dir", str(tmp_path / "work"),
                           "--output", str(tmp_path / "R.md")])
    assert results["tfidf_lr"]["session"]["sessions"] == 0
    assert (tmp_path / "R.md").exists()
