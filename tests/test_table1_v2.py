"""Model v2: clinical negatives, grouped folds, the masked review loss, metrics and the out-of-fold decision
rule on hand-made examples; the v2 command and the GPU script's dry run on the fixture."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from homework_monitor.contract import CLASSES, Example
from homework_monitor.training import table1_v2
from homework_monitor.training.data import LabeledItem, clinical_negatives, select_negatives
from homework_monitor.training.head import JointHead, masked_bce, review_pos_weight
from homework_monitor.training.metrics import (
    binary_metrics,
    choose_class_thresholds,
    choose_event_threshold,
    cross_fitted,
    event_labels,
    fires,
    homework_curve,
    paired_group_bootstrap,
    weighted_binary_metrics,
)
from homework_monitor.training.table1 import with_sections

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
P, T, J, L, N = range(5)  # practice take_action journal learn none


def _session(sid: str, speakers: str) -> dict:
    return {"session_id": sid, "utterances": [
        {"speaker": "therapist" if s == "t" else "client", "text": f"line {i}"} for i, s in enumerate(speakers)]}


# --- clinical negatives ------------------------------------------------------------------------------
def test_clinical_negatives_skip_marked_and_labelled_turns():
    sessions = [("annomi", _session("a", "tctctct")), ("hlqc", _session("b", "tctc")),
                ("hlqc", _session("not-dev", "tctc"))]
    rows = [{"session_id": "a", "turns_any": [2]}, {"session_id": "b", "turns_any": []}]
    neg = clinical_negatives(sessions, rows, labelled={("a", 4)})
    assert [(i.session_id, i.turn) for i in neg] == [("a", 0), ("a", 6), ("b", 0), ("b", 2)]
    assert all(i.label == "none" and i.real and i.review is None for i in neg)
    assert [i.source for i in neg] == ["annomi", "annomi", "hlqc", "hlqc"]
    assert neg[0].example.client == "line 1"


def _neg(sid: str, turn: int) -> LabeledItem:
    return LabeledItem(f"{sid}-{turn}", "annomi", sid, Example("t"), "none", ("none",), True, turn)


def test_selected_negatives_never_come_from_the_test_fold():
    negs = [_neg(f"s{s}", t) for s in range(12) for t in range(5)]
    fold_of = {f"s{s}": s % 3 for s in range(12)}
    for k in range(3):
        chosen = select_negatives(negs, fold_of, k, cap=None)
        assert chosen and all(fold_of[i.session_id] != k for i in chosen)
        assert len(chosen) == 40
        capped = select_negatives(negs, fold_of, k, cap=7)
        assert capped == chosen[:7]  # one seeded order, cut at the cap
    assert len(select_negatives(negs, fold_of, None, cap=None)) == 60  # a final model takes every fold's
    assert select_negatives(negs, fold_of, 0, 5, seed=1) != select_negatives(negs, fold_of, 0, 5, seed=2)


def test_student_units_never_come_from_the_test_fold():
    class U:
        def __init__(self, sid):
            self.session_id = sid
    units = [U(f"s{i % 6}") for i in range(30)] + [U("unlabelled-session")] * 4
    fold_of = {f"s{i}": i % 3 for i in range(6)}
    for k in range(3):
        idx = table1_v2.student_units(units, fold_of, k, cap=None)
        assert all(fold_of.get(units[j].session_id, -1) != k for j in idx)
        assert sum(units[j].session_id == "unlabelled-session" for j in idx) == 4  # in no fold: always usable
        assert len(table1_v2.student_units(units, fold_of, k, cap=5)) == 5


# --- the v2 context on the fixture: grouped folds ---------------------------------------------------
@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2ctx")
    return table1_v2.build_v2_context(table1_v2.CONFIGS["smoke"], FIXTURES / "data", FIXTURES / "labels", "cpu",
                                      tmp / "work", tmp / "results")


def test_v2_context_scores_all_real_labels_with_review_annotations(ctx):
    ids = [i.id for i in ctx.real]
    assert len(ids) == len(set(ids)) == 60 + 2 + 19  # real_dev + the two fixture label files
    rev = table1_v2.review_target(ctx.real)
    assert np.isnan(rev[:60]).all()  # real_dev items carry no review annotation
    assert (~np.isnan(rev[60:])).all() and np.nansum(rev) == 3


def test_items_drawn_where_models_fire_are_left_to_the_weighted_estimate(ctx, tmp_path):
    """A label file drawn by what models predicted (with its strata file) changes neither the rows' items
    nor their data hash, so cached rows stay valid and rows are compared on model-independent items."""
    labels = tmp_path / "labels"
    shutil.copytree(FIXTURES / "labels", labels)
    rows = [json.loads(line) for line in (FIXTURES / "labels" / "added.jsonl").read_text().splitlines()]
    (labels / "drawn.jsonl").write_text("".join(
        json.dumps({**r, "id": f"d{r['id']}", "why": "r4_models_fire"}) + "\n" for r in rows))
    (labels / "drawn.strata.json").write_text(json.dumps({"strata": {"r4_models_fire": {"pool": 20, "drawn": 2}}}))
    with_drawn = table1_v2.build_v2_context(table1_v2.CONFIGS["smoke"], FIXTURES / "data", labels, "cpu",
                                            tmp_path / "work", tmp_path / "results")
    assert [i.id for i in with_drawn.real] == [i.id for i in ctx.real]
    assert with_drawn.data.data_hash == ctx.data.data_hash
    (labels / "drawn.strata.json").unlink()  # without its strata file the same rows are ordinary labels
    plain = table1_v2.build_v2_context(table1_v2.CONFIGS["smoke"], FIXTURES / "data", labels, "cpu",
                                       tmp_path / "work", tmp_path / "results")
    assert len(plain.real) == len(ctx.real) + 2 and plain.data.data_hash != ctx.data.data_hash


def test_folds_are_grouped_by_session_and_training_never_sees_the_test_fold(ctx):
    sessions_dev = set(ctx.truth)
    folds = ctx.item_folds
    for sid in {i.session_id for i in ctx.real}:
        assert len({f for f, i in zip(folds, ctx.real) if i.session_id == sid}) == 1
    assert ctx.negatives and {i.session_id for i in ctx.negatives} <= sessions_dev
    labelled = {(i.session_id, i.turn) for i in ctx.real}
    assert not any((i.session_id, i.turn) in labelled for i in ctx.negatives)
    for k in range(ctx.cfg.n_folds):
        train, w = ctx.train_split(k)
        assert len(train) == len(w)
        assert all(ctx.fold_of[i.session_id] != k for i in train if i.real)
        negs = [i for i in train if i.id.startswith("neg-")]
        assert 0 < len(negs) <= ctx.v2.negatives_cap
        _, sess_folds = ctx.session_examples()
        assert (sess_folds == k).any()  # every fold scores some sessions_dev microdialogues


def test_deadline_stops_a_row_that_would_overrun_but_keeps_a_finished_one(ctx):
    import time
    ctx.deadline = time.time() + 100
    try:
        started = time.time() - 60  # one fold took 60 s: two more would end ~20 s late
        with pytest.raises(table1_v2.RowSkipped, match="1/3 folds"):
            ctx.check_time(started, 1, 3, "row")
        ctx.check_time(time.time() - 30, 1, 3, "row")  # 60 s more: in time
        ctx.deadline = time.time() - 1
        ctx.check_time(started, 3, 3, "row")  # all folds done: kept even past the deadline
    finally:
        ctx.deadline = None


# --- the masked review loss ------------------------------------------------------------------------
def test_masked_bce_ignores_items_without_a_review_annotation():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0], requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
    loss = masked_bce(logits, target)
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]].detach(), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(want.item())
    loss.backward()
    assert logits.grad[1] == 0 and logits.grad[3] == 0 and logits.grad[0] != 0 and logits.grad[2] != 0
    none = torch.tensor([1.0, 2.0], requires_grad=True)
    empty = masked_bce(none, torch.tensor([float("nan"), float("nan")]))
    empty.backward()
    assert empty.item() == 0.0 and (none.grad == 0).all()
    assert review_pos_weight(np.array([1, 0, 0, 0, 0, np.nan, 0, 0, 0, 0])) == pytest.approx(np.sqrt(8))


def test_joint_head_class_output_is_the_plain_head():
    torch.manual_seed(0)
    head = JointHead(6, 4, 5, 0.0).eval()
    x = torch.randn(3, 6)
    logits, review = head(x)
    assert torch.allclose(logits, head.cls(x)) and review.shape == (3,)


# --- metrics and the decision rule on hand-made examples ------------------------------------------
def test_binary_metrics_exact():
    m = binary_metrics(np.array([1, 1, 1, 0, 0, 0], bool), np.array([1, 1, 0, 1, 0, 0], bool))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (m["n"], m["positives"], m["predicted"]) == (6, 3, 3)
    assert binary_metrics(np.zeros(3, bool), np.zeros(3, bool))["f1"] == 0.0


def test_weighted_metrics_count_each_item_as_its_stratum_share():
    # A stratum drawn whole (weight 1) where the model fires, and a random stratum drawn 1 in 10: its one
    # positive stands for ten the model missed.
    truth = np.array([1, 0, 1, 0, 0], bool)
    pred = np.array([1, 1, 0, 0, 0], bool)
    m = weighted_binary_metrics(truth, pred, np.array([1, 1, 10, 10, 10.0]))
    assert (m["precision"], m["recall"]) == pytest.approx((1 / 2, 1 / 11))
    assert (m["predicted"], m["positives"], m["population"], m["n"]) == (2, 11, 32, 5)
    same = weighted_binary_metrics(truth, pred, np.ones(5))
    plain = binary_metrics(truth, pred)
    assert (same["precision"], same["recall"], same["f1"]) == (plain["precision"], plain["recall"], plain["f1"])


def _p(*rows):
    return np.array(rows, dtype=float)


def test_event_labels_apply_class_thresholds():
    probs = _p([0.7, 0.1, 0.1, 0.0, 0.1], [0.4, 0.1, 0.1, 0.0, 0.4], [0.0, 0.9, 0.0, 0.0, 0.1], [0.1, 0.1, 0.1, 0.1, 0.6])
    thr = np.array([0.6, 0.95, 0.5, 0.5, 0.0])
    assert event_labels(probs, thr).tolist() == [P, N, N, N]  # take_action 0.9 < 0.95; ties go to the first
    assert event_labels(probs, np.zeros(5)).tolist() == [P, P, T, N]


def test_class_thresholds_favour_precision():
    # take_action scores: truths at 0.9, 0.8, 0.6; false alarms at 0.7 and 0.5
    probs = np.zeros((6, 5))
    for i, (p, _) in enumerate([(0.9, T), (0.8, T), (0.6, T), (0.7, N), (0.5, N), (0.1, N)]):
        probs[i, T], probs[i, N] = p, 1 - p
    y = np.array([T, T, T, N, N, N])
    thr = choose_class_thresholds(probs, y, beta=0.5)
    # t<=0.5: P 3/5 R 1 (F0.5 .652); 0.55-0.6: P 3/4 R 1 (.789); 0.65-0.7: P 2/3 R 2/3; 0.75-0.8: P 1 R 2/3 (.909)
    assert thr[T] == pytest.approx(0.8)
    assert choose_class_thresholds(probs, y, beta=2.0)[T] == pytest.approx(0.6)  # recall first: keep all three
    assert thr[N] == 0.0
    assert choose_event_threshold(probs, y, beta=0.5)[T] == pytest.approx(0.8)


def test_thresholds_are_chosen_out_of_fold():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=60)
    y = rng.integers(0, 5, size=60)
    folds = np.repeat([0, 1, 2], 20)
    choose = lambda p, t: choose_class_thresholds(p, t)  # noqa: E731
    pred, thr = cross_fitted(probs, y, folds, choose)
    for k in range(3):
        np.testing.assert_allclose(thr[k], choose(probs[folds != k], y[folds != k]))
        assert (pred[folds == k] == event_labels(probs[folds == k], np.array(thr[k]))).all()
    # fold 0's own labels never move fold 0's thresholds; they do move the other folds'
    y2 = y.copy()
    y2[folds == 0] = N
    _, thr2 = cross_fitted(probs, y2, folds, choose)
    assert thr2[0] == thr[0] and (thr2[1], thr2[2]) != (thr[1], thr[2])


def test_homework_curve_exact():
    probs = _p([0.9, 0, 0, 0, 0.1], [0.6, 0, 0, 0, 0.4], [0.2, 0, 0, 0, 0.8])
    y = np.array([P, N, P])
    curve = {round(c["threshold"], 2): c for c in homework_curve(probs, y, np.array([0.5, 0.7, 0.95]))}
    assert (curve[0.5]["precision"], curve[0.5]["recall"]) == pytest.approx((0.5, 0.5))
    assert (curve[0.7]["precision"], curve[0.7]["recall"]) == pytest.approx((1.0, 0.5))
    assert curve[0.95]["f1"] == 0.0


def test_paired_group_bootstrap_resamples_whole_sessions_for_both_decisions():
    # 4 sessions of 3 turns; b finds every assignment, a only those of session 0
    groups = np.repeat(["s0", "s1", "s2", "s3"], 3)
    truth = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0], bool)
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    b = truth.copy()
    same = paired_group_bootstrap(truth, a, a, groups, n=200)
    assert same["precision"] == [0.0, 0.0] and same["recall"] == [0.0, 0.0]
    d = paired_group_bootstrap(truth, a, b, groups, n=500)
    assert d["precision"] == [0.0, 0.0]  # both always right where they fire
    assert 0 < d["recall"][0] <= d["recall"][1] <= 1.0  # b finds more on every resample that holds a positive
    # Whole sessions move together: a session's turns are never split, so recall takes only quarter steps.
    # (Per-turn resampling would give other fractions.)
    assert all(abs(v * 4 - round(v * 4)) < 1e-9 for v in d["recall"])
    assert paired_group_bootstrap(truth, b, a, groups, n=500)["recall"] == [-d["recall"][1], -d["recall"][0]]


# --- the report section ----------------------------------------------------------------------------
def test_sections_survive_a_rerun_of_the_other_command(tmp_path):
    path = tmp_path / "R.md"
    path.write_text(with_sections("# Table 1\nrows\n", path))
    path.write_text(with_sections(path.read_text(), path, {"v2": "## v2\nfigures"}))
    path.write_text(with_sections("# Table 1\nnew rows\n", path))  # table1 rewrites its part
    text = path.read_text()
    assert text.startswith("# Table 1\nnew rows\n") and "## v2\nfigures" in text and text.count("## v2") == 1
    path.write_text(with_sections(path.read_text(), path, {"v2": "## v2\nnew figures"}))
    assert "new rows" in path.read_text() and "new figures" in path.read_text() and "\nfigures" not in path.read_text()


def test_v2_command_on_the_fixture(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Table 1 (kept)\n")
    results = table1_v2.main(["--config", "smoke", "--data-dir", str(FIXTURES / "data"), "--labels-dir",
                              str(FIXTURES / "labels"), "--rows", "tfidf_lr_v2", "--results-dir",
                              str(tmp_path / "res"), "--work-dir", str(tmp_path / "work"), "--output", str(out)])
    r = results["tfidf_lr_v2"]
    assert r["n_items"] == 81 and r["session"]["sessions"] == 6
    assert set(r["rule"]["per_fold_thresholds"]) == {0, 1, 2}
    assert "review" not in r  # TF-IDF has no review output
    md = out.read_text()
    assert md.startswith("# Table 1 (kept)") and "<!-- section:v2:begin -->" in md
    assert md.count("needs GPU: `bash training/gpu_run_v2.sh`") == len(table1_v2.ROWS) - len(table1_v2.CPU_ROWS)
    assert "not computed: `python -m homework_monitor.training.table1_v2 --rows minilm_frozen_v2`" in md
    js = json.loads((tmp_path / "RESULTS_v2.json").read_text())
    assert js["missing"] == [r for r in table1_v2.ROWS if r != "tfidf_lr_v2"]
    res = json.loads((tmp_path / "res" / "tfidf_lr_v2.json").read_text())
    assert len(res["item_logits"]) == 81 and len(res["session_logits"]) == 38
    assert res["data_hash"] == js["data_hash"]

    # Other labels (one file fewer): the cached row belongs to the old items, so the report does not score
    # it against the new ones; asked for, it is computed again.
    fewer = tmp_path / "fewer_labels"
    fewer.mkdir()
    shutil.copy(FIXTURES / "labels" / "v2_added.jsonl", fewer)
    args = ["--config", "smoke", "--data-dir", str(FIXTURES / "data"), "--labels-dir", str(fewer), "--results-dir",
            str(tmp_path / "res"), "--work-dir", str(tmp_path / "work"), "--output", str(out)]
    assert table1_v2.main([*args, "--rows", ""]) == {}
    assert (f"not computed on this data (only on data `{js['data_hash']}`): "
            "`python -m homework_monitor.training.table1_v2 --rows tfidf_lr_v2`") in out.read_text()
    assert json.loads((tmp_path / "RESULTS_v2.json").read_text())["missing"] == list(table1_v2.ROWS)
    again = table1_v2.main([*args, "--rows", "tfidf_lr_v2"])
    assert again["tfidf_lr_v2"]["n_items"] == 79
    assert len(json.loads((tmp_path / "res" / "tfidf_lr_v2.json").read_text())["item_logits"]) == 79


# --- the GPU script, end to end on CPU ---------------------------------------------------------------
def _tiny_mpnet(path: Path) -> Path:
    """A small random MPNet (MPNet's input names) with the MiniLM tokenizer: the MPNet code path, fast."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from homework_monitor.model import base_encoder_path
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=30527, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128)).save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(base_encoder_path()), model_input_names=["input_ids", "attention_mask"]
                                  ).save_pretrained(str(path))
    return path


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    """Pack -> staged parts -> unpack -> every GPU row -> served student, as on the H100 (smoke, CPU)."""
    env = {**os.environ, "PY": f"{sys.executable} -P", "DATA": str(FIXTURES / "data"), "NO_WHL": "1",
           "STAGE": str(tmp_path / "stage"), "WORK": str(tmp_path / "pack"), "PART_MB": "8"}
    subprocess.run(["bash", "training/gpu_pack_v2.sh"], cwd=ROOT, env=env, check=True)
    parts = sorted((tmp_path / "stage").glob("payload.tar.*"))
    assert len(parts) >= 3 and all(p.stat().st_size <= 8 << 20 for p in parts)
    # A part that did not arrive (a machine replaced between calls) stops the run and is named.
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in [*parts[:1], *parts[2:], tmp_path / "stage" / "PARTS.sha256"]:
        (broken / p.name).write_bytes(p.read_bytes())
    env_broken = {**os.environ, "STAGE_DIR": str(broken), "CARRIED": str(tmp_path / "none"),
                  "UNPACK": str(tmp_path / "u0"), "WORK": str(tmp_path / "w0"), "OUT": str(tmp_path / "o0")}
    failed = subprocess.run(["bash", "training/gpu_run_v2.sh"], cwd=ROOT, env=env_broken, capture_output=True,
                            text=True)
    assert failed.returncode == 2 and f"{parts[1].name}: FAILED" in failed.stdout, failed.stdout
    mpnet = _tiny_mpnet(tmp_path / "mpnet")
    out = tmp_path / "out"
    env = {**os.environ, "PY": f"{sys.executable} -P", "CONFIG": "smoke", "DEVICE": "cpu", "SKIP_WHL": "1", "STREAM_THREADS": "1",
           "LABELS": str(FIXTURES / "labels"), "MPNET": str(mpnet), "OUT": str(out),
           "STAGE_DIR": str(tmp_path / "stage"), "CARRIED": str(tmp_path / "none"), "UNPACK": str(tmp_path / "unpack"), "WORK": str(tmp_path / "w")}
    done = subprocess.run(["bash", "training/gpu_run_v2.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    log = (out / "gpu_v2.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert "SKIPPED" not in log, log[-3000:]
    res = tmp_path / "res"
    with tarfile.open(out / "results_v2.tgz") as tf:
        tf.extractall(res, filter="data")
    gpu_rows = [r for r in table1_v2.ROWS if r not in table1_v2.CPU_ROWS]
    assert sorted(p.stem for p in res.glob("*.json")) == sorted(gpu_rows)
    for row in gpu_rows:
        d = json.loads((res / f"{row}.json").read_text())
        assert len(d["item_logits"]) == 81 and len(d["review_logits"]) == 81
        assert np.isfinite(d["item_logits"]).all()
    student = json.loads((res / "minilm_student_v2.json").read_text())
    assert student["notes"]["teacher"] in ("mpnet_finetuned_v2", "minilm_finetuned_v2")
    assert student["notes"]["units_per_fold"] == 20

    art = tmp_path / "art"
    art.mkdir()
    blob = b"".join(p.read_bytes() for p in sorted(out.glob("artifact.tgz.part-*")))
    (tmp_path / "a.tgz").write_bytes(blob)
    with tarfile.open(tmp_path / "a.tgz") as tf:
        tf.extractall(art, filter="data")
    spec = json.loads((art / "artifact" / "model.json").read_text())
    assert spec["extra"]["row"] == "minilm_student_v2" and spec["extra"]["review_head"]["file"]
    assert (art / "artifact" / "review_head.safetensors").exists()
    assert (art / "artifact" / "encoder" / "model.onnx").exists()
    from homework_monitor.model import HomeworkClassifier
    probs = HomeworkClassifier(art / "artifact").predict_proba([Example("Write it down each night.", "Okay.")])
    assert probs.shape == (1, len(CLASSES)) and probs.sum() == pytest.approx(1.0, abs=1e-5)


# --- length-bucketed batches, the CPU row, the comparison with the served model ----------------------
def test_length_buckets_cover_every_item_once_with_similar_lengths():
    from homework_monitor.training.finetune import epoch_batches
    lengths = np.random.default_rng(1).integers(5, 600, 1000)
    plain = epoch_batches(np.random.default_rng(3), lengths, 64, False)
    # Without buckets: the permutation cut in order (the served model's training, unchanged).
    assert np.array_equal(np.concatenate(plain), np.random.default_rng(3).permutation(1000))
    bucketed = epoch_batches(np.random.default_rng(3), lengths, 64, True, pool_batches=5)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    assert all(len(b) <= 64 for b in bucketed)

    def padded(batches):  # what a batch costs: its longest item, times its size
        return sum(int(lengths[b].max()) * len(b) for b in batches)
    assert padded(bucketed) < 0.75 * padded(plain)
    again = epoch_batches(np.random.default_rng(3), lengths, 64, True, pool_batches=5)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again))


def test_rows_are_compared_with_the_served_model_on_what_it_never_trained_on(ctx):
    from homework_monitor.training.head import softmax
    from homework_monitor.training.table1 import RowResult
    ref = table1_v2.served_reference(ctx, table1_v2.SERVED_ARTIFACT)
    fresh = [i for i in ctx.real if i.id not in ctx.real_dev_ids]
    assert ref["items"] == [i.id for i in fresh] and len(fresh) == 21
    assert (ctx.results_dir / "served_reference.json").exists()
    again = table1_v2.served_reference(ctx, table1_v2.SERVED_ARTIFACT)  # from the cache, the same
    assert np.allclose(again["item_probs"], ref["item_probs"], atol=1e-4)

    # A row whose out-of-fold predictions are the served model's on the compared items scores as it does.
    keep = np.isin([i.id for i in ctx.real], ref["items"])
    item_logits = np.zeros((len(ctx.real), len(CLASSES)))
    item_logits[keep] = np.log(np.clip(ref["item_probs"], 1e-6, 1)) * 50  # sharp: any temperature keeps the argmax
    same = table1_v2.against_served(ctx, RowResult("copy", item_logits, np.log(ref["sessions"]), 0.0, "test"), ref)
    seen = {i.session_id for i in ctx.real if i.id in ctx.real_dev_ids}
    assert same["n_items"] == 21 and same["n_sessions"] == len(set(ctx.truth) - seen) > 0
    assert same["row"]["pooled"] == same["served"]["pooled"]
    # A row that never fires: no live event, no session with homework.
    silent = np.tile(np.log(np.eye(len(CLASSES))[CLASSES.index("none")] + 1e-9), (len(ctx.real), 1))
    quiet_sessions = np.tile(silent[:1], (len(ref["sessions"]), 1))
    quiet = table1_v2.against_served(ctx, RowResult("quiet", silent, quiet_sessions, 0.0, "test"), ref)
    assert quiet["row"]["live_turns"]["predicted"] == 0 and quiet["row"]["session"]["recall"] == 0
    assert quiet["row"]["live_turns"]["positives"] == same["served"]["live_turns"]["positives"] > 0
    assert softmax(silent, 1.0).argmax(1).tolist() == [CLASSES.index("none")] * len(ctx.real)
    # The live-turn curve: its point at the served threshold is the table's figure, and fewer turns fire
    # as the threshold rises.
    for side in ("served", "row"):
        curve = same[side]["live_turns_curve"]
        assert [c["threshold"] for c in curve] == list(table1_v2.LIVE_CURVE_THRESHOLDS)
        at = next(c for c in curve if c["threshold"] == same["threshold"])
        assert {k: at[k] for k in same[side]["live_turns"]} == same[side]["live_turns"]
        assert all(a["predicted"] >= b["predicted"] for a, b in zip(curve, curve[1:]))
    assert all(c["predicted"] == 0 for c in quiet["row"]["live_turns_curve"])
    # The paired difference, resampling sessions: 0 on every resample for a row that fires exactly where the
    # served model does; against a row that never fires (as its control), recall ahead and precision undefined.
    target = np.where(fires(ref["sessions"], same["threshold"]), ref["sessions"].argmax(1), CLASSES.index("none"))
    mirror = RowResult("mirror", item_logits, 1000.0 * np.eye(len(CLASSES))[target], 0.0, "test")
    m = table1_v2.against_served(ctx, mirror, ref, control=RowResult("quiet", silent, quiet_sessions, 0.0, "test"))
    assert m["row"]["live_turns"] == m["served"]["live_turns"] and m["served"]["live_turns"]["recall"] > 0
    assert m["live_turns_difference"]["precision"] == m["live_turns_difference"]["recall"] == [0.0, 0.0]
    assert m["control"]["row"] == "quiet" and m["control"]["live_turns"] == quiet["row"]["live_turns"]
    assert m["control"]["live_turns_difference"]["recall"][1] > 0 <= m["control"]["live_turns_difference"]["recall"][0]
    assert m["control"]["live_turns_difference"]["precision"] is None and "control" not in same
    assert quiet["live_turns_difference"]["recall"][0] < 0 and quiet["live_turns_difference"]["precision"] is None


@pytest.mark.slow
def test_a_cpu_row_exports_a_served_artifact(tmp_path):
    from homework_monitor.runtime import OnnxClassifier
    args = ["--config", "smoke", "--data-dir", str(FIXTURES / "data"), "--labels-dir", str(FIXTURES / "labels"),
            "--results-dir", str(tmp_path / "res"), "--work-dir", str(tmp_path / "work"), "--no-report"]
    table1_v2.main([*args, "--rows", "minilm_finetuned_v2_pair", "--export-row", "minilm_finetuned_v2_pair",
                    str(tmp_path / "art")])
    clf = OnnxClassifier(tmp_path / "art")
    assert clf.spec.views == ("pair",) and clf.spec.extra["row"] == "minilm_finetuned_v2_pair"
    assert clf.spec.extra["items"] > 81 and (tmp_path / "art" / "review_head.safetensors").exists()
    probs = clf.predict_proba([Example(therapist="Could you write down each worry this week?", client="Sure.")])
    assert probs.shape == (1, len(CLASSES)) and np.isclose(probs.sum(), 1.0)
    with pytest.raises(SystemExit, match="--export-row"):
        table1_v2.main([*args, "--rows", "", "--export-row", "tfidf_lr_v2", str(tmp_path / "no")])


# --- the row that continues the served model ---------------------------------------------------------
def _git(repo: Path, *args: str, data: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, input=data, capture_output=True, check=True).stdout.decode().strip()


def test_served_checkpoint_is_read_from_git_history_by_blob_id_and_never_half_written(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    contents = {"encoder/config.json": b'{"hidden_size": 4}', "head.safetensors": b"head bytes"}
    blobs = {rel: _git(repo, "hash-object", "-w", "--stdin", data=data) for rel, data in contents.items()}
    out = table1_v2.served_checkpoint(tmp_path / "work", blobs, repo)
    assert {rel: (out / rel).read_bytes() for rel in contents} == contents
    assert table1_v2.served_checkpoint(tmp_path / "work", blobs, repo) == out  # written once, then reused

    missing = {**blobs, "encoder/model.safetensors": "0" * 40}  # a blob this history does not hold
    with pytest.raises(table1_v2.RowSkipped, match="not in this clone's git history"):
        table1_v2.served_checkpoint(tmp_path / "other", missing, repo)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
    with pytest.raises(table1_v2.RowSkipped, match="encoder/config.json"):  # not a git checkout at all
        table1_v2.served_checkpoint(tmp_path / "third", blobs, tmp_path / "work")


def test_fine_tuning_can_start_from_a_trained_head(tmp_path):
    from safetensors.torch import save_file

    from homework_monitor.model import Head, base_encoder_path
    from homework_monitor.training.finetune import FinetuneConfig, finetune
    torch.manual_seed(1)
    trained = Head(384 * 2, 256, len(CLASSES), 0.2)
    save_file(trained.state_dict(), str(tmp_path / "head.safetensors"))
    ex = [Example(therapist="Try writing it down tonight.", client="Okay.")] * 4
    y, w = np.zeros(4, int), np.ones(4)
    cfg = FinetuneConfig(epochs=1, max_steps=0, batch_size=2)  # no step: the model as it starts
    started = finetune(base_encoder_path(), ex, y, w, ("pair", "therapist"), "mean", cfg, len(CLASSES),
                       head_init=tmp_path / "head.safetensors", review=np.full(4, np.nan))
    assert all(torch.equal(a, b) for a, b in zip(started.class_head.state_dict().values(),
                                                  trained.state_dict().values()))
    fresh = finetune(base_encoder_path(), ex, y, w, ("pair", "therapist"), "mean", cfg, len(CLASSES))
    assert not torch.equal(fresh.class_head.state_dict()["net.1.weight"], trained.state_dict()["net.1.weight"])


def _skip_without_the_served_checkpoint() -> None:
    blob = table1_v2.SERVED_CHECKPOINT_BLOBS["encoder/model.safetensors"]
    if shutil.which("git") is None or subprocess.run(["git", "cat-file", "-e", blob], cwd=Path(table1_v2.__file__).parent,
                                                     capture_output=True).returncode != 0:
        pytest.skip("no git history here (a shallow clone, an export): the served checkpoint cannot be read")


def test_the_served_checkpoint_in_history_is_the_served_model(tmp_path):
    """The start of ``minilm_served_further_v2`` gives the served ONNX model's probabilities."""
    _skip_without_the_served_checkpoint()
    from safetensors.torch import load_file

    from homework_monitor.runtime import OnnxClassifier
    from homework_monitor.training.finetune import FinetuneConfig, FinetunedModel
    from homework_monitor.training.head import softmax
    from homework_monitor.triton_models import SERVED_ARTIFACT
    start = table1_v2.served_checkpoint(tmp_path)
    model = FinetunedModel(start / "encoder", table1_v2.FT_VIEWS, "mean", FinetuneConfig(), len(CLASSES), "cpu")
    model.class_head.load_state_dict(load_file(str(start / "head.safetensors")))
    model.eval()
    served = OnnxClassifier(SERVED_ARTIFACT)
    ex = [Example(therapist="Try writing down three things each night before bed.", client="Okay, I can do that."),
          Example(therapist="How are you feeling today?", client="Not great."),
          Example(therapist="Maybe read that chapter on anxiety this week.", client="Sure.")]
    with torch.no_grad():
        probs = softmax(model(ex).float().numpy(), served.spec.temperature)
    assert np.abs(probs - served.predict_proba(ex)).max() < 1e-4


def test_the_no_context_row_is_the_frozen_row_less_the_context_view(ctx, monkeypatch):
    """The context ablation differs from the frozen row only in the view it leaves out (the frozen row
    itself, features and head, is what the report's figures come from)."""
    calls = []
    monkeypatch.setattr(table1_v2, "row_minilm_frozen_v2", lambda c, views=None: calls.append((c, views)) or "rows")
    assert table1_v2.row_minilm_frozen_v2_no_context(ctx) == "rows"
    assert calls == [(ctx, ("pair", "therapist"))] and ctx.cfg.views == ("pair", "therapist", "context")


def test_the_mpnet_frozen_row_reads_mpnet_features_and_is_skipped_without_the_encoder(tmp_path):
    """The MPNet frozen row is the frozen row on MPNet's own features (cached apart from MiniLM's); where
    the encoder folder is missing it is skipped with the command that assembles it, and nothing is cached."""
    mpnet = _tiny_mpnet(tmp_path / "mpnet")
    build = lambda path: table1_v2.build_v2_context(  # noqa: E731
        table1_v2.CONFIGS["smoke"], FIXTURES / "data", FIXTURES / "labels", "cpu", tmp_path / "work",
        tmp_path / "results", mpnet_path=path)
    with pytest.raises(table1_v2.RowSkipped, match="base_encoders mpnet"):
        table1_v2.row_mpnet_frozen_v2(build(tmp_path / "absent"))
    assert not (tmp_path / "work" / "features").exists()
    ctx = build(mpnet)
    items, sess, notes, review = table1_v2.row_mpnet_frozen_v2(ctx)
    assert notes["encoders"] == ["mpnet"] and notes["views"] == ("pair", "therapist") and items.shape == (len(ctx.real), 5) and review.shape == (len(ctx.real),)
    assert sess.shape[1] == 5 and np.isfinite(items).all()
    widths = {np.load(f, mmap_mode="r").shape[1] for f in (tmp_path / "work" / "features").glob("*.npy")}
    assert widths == {64}  # the tiny MPNet's hidden size, per view: MiniLM's 384 never entered
    assert len(list((tmp_path / "work" / "features").glob("*.npy"))) == 6  # 2 views x labelled, negatives, sessions
    assert table1_v2.ENCODER_OF["mpnet_frozen_v2"] == "mpnet" and "mpnet_frozen_v2" in table1_v2.CPU_ROWS


def test_the_served_encoder_rows_put_mpnet_beside_the_served_encoder(tmp_path):
    """The control row is a new head on the served encoder's features; the MPNet row reads the same features
    (computed once) with MPNet's beside them; a row over two encoders costs the sum of their latencies."""
    _skip_without_the_served_checkpoint()
    ctx = table1_v2.build_v2_context(table1_v2.CONFIGS["smoke"], FIXTURES / "data", FIXTURES / "labels", "cpu",
                                     tmp_path / "work", tmp_path / "results", mpnet_path=_tiny_mpnet(tmp_path / "mpnet"))
    control = table1_v2.row_served_encoder_head_v2(ctx)
    both = table1_v2.row_served_encoder_mpnet_head_v2(ctx)
    assert control[2]["encoders"] == ["served"] and both[2]["encoders"] == ["served", "mpnet"]
    assert control[0].shape == both[0].shape == (len(ctx.real), 5) and not np.allclose(control[0], both[0])
    widths = sorted(np.load(f, mmap_mode="r").shape[1] for f in (tmp_path / "work" / "features").glob("*.npy"))
    assert widths == [64] * 6 + [384] * 6  # 2 views x 3 sets per encoder: the served ones once for both rows
    assert set(table1_v2.STARTS_FROM_SERVED) >= {"served_encoder_head_v2", "served_encoder_mpnet_head_v2"}
    with pytest.raises(ValueError, match="unknown encoder"):
        table1_v2.frozen_encoders_cv(ctx, ("roberta",), table1_v2.FT_VIEWS)

    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    (ctx.results_dir / "latency_cpu.json").write_text(json.dumps(
        {"minilm:pair,therapist": {"ms": 20.0, "how": "measured"}, "mpnet:pair,therapist": {"ms": 80.5, "how": "measured"}}))
    res = table1_v2.RowResult("served_encoder_mpnet_head_v2", both[0], both[1], 1.0, "cpu", both[2])
    assert table1_v2.cpu_latency(ctx, "served_encoder_mpnet_head_v2", res)["ms"] == 100.5
    assert table1_v2.cpu_latency(ctx, "served_encoder_head_v2", res)["ms"] == 20.0


def test_head_seed_goes_to_a_results_dir_of_its_own(tmp_path):
    args = ["--config", "smoke", "--data-dir", str(FIXTURES / "data"), "--labels-dir", str(FIXTURES / "labels"),
            "--work-dir", str(tmp_path / "work"), "--output", str(tmp_path / "R.md"), "--rows", "minilm_frozen_v2",
            "--no-report", "--head-seed", "5"]
    with pytest.raises(SystemExit, match="--results-dir"):
        table1_v2.main(args)  # the committed rows' folder: refused, nothing computed
    assert not (tmp_path / "work").exists()
    table1_v2.main([*args, "--results-dir", str(tmp_path / "s5")])
    assert json.loads((tmp_path / "s5" / "minilm_frozen_v2.json").read_text())["notes"]["head"]["seed"] == 5
