"""homework_monitor.training.data on the project's own fixtures (tests/fixtures/data): labeled items, microdialogues, folds."""
from __future__ import annotations

import collections
import gzip
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homework_monitor.stream.offline import session_utterances
from homework_monitor.stream.schemas import CLASSES
from homework_monitor.stream.windowing import WindowConfig, window_session
from homework_monitor.training.data import (
    corpus_paths,
    load_labeled,
    load_labeled_data,
    read_jsonl,
    session_folds,
    text_sha256,
    unlabeled_microdialogues,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
REAL = FIXTURES / "labeled" / "real_dev.jsonl"
MINI = FIXTURES / "corpora" / "mini" / "sessions.jsonl"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _session(sid: str, pairs: list[tuple[str, str]]) -> dict:
    utts, t = [], 0.0
    for speaker, text in pairs:
        utts.append({"speaker": speaker, "text": text, "start_s": t})
        t += 3.0
    return {"session_id": sid, "source": "test", "utterances": utts}


# --- read_jsonl ------------------------------------------------------------------------------------
def test_read_jsonl_skips_blank_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert list(read_jsonl(p)) == [{"a": 1}, {"a": 2}]


def test_read_jsonl_falls_back_to_gz_copy(tmp_path):
    rows = _rows(REAL)
    gz = _write_jsonl(tmp_path / "labeled" / "real_dev.jsonl.gz", rows, gz=True)
    plain = tmp_path / "labeled" / "real_dev.jsonl"
    assert not plain.exists()
    assert list(read_jsonl(plain)) == rows  # asked for the plain name, read the .gz
    assert list(read_jsonl(gz)) == rows  # and the .gz path directly
    # text_sha256 hashes records, not bytes: the compressed copy hashes like the original
    assert text_sha256(plain) == text_sha256(REAL)


def test_read_jsonl_prefers_plain_file_when_both_exist(tmp_path):
    plain = _write_jsonl(tmp_path / "a.jsonl", [{"v": "plain"}])
    _write_jsonl(tmp_path / "a.jsonl.gz", [{"v": "gz"}], gz=True)
    assert list(read_jsonl(plain)) == [{"v": "plain"}]


def test_read_jsonl_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_jsonl(tmp_path / "nope.jsonl"))


# --- labeled data ----------------------------------------------------------------------------------
def test_load_labeled_data_counts_and_labels():
    data = load_labeled_data(FIXTURES)
    rows = _rows(REAL)
    assert len(data.real) == len(rows) == 60
    assert data.synthetic == []  # the fixture has no synthetic.jsonl
    assert collections.Counter(i.label for i in data.real) == {
        "none": 28, "practice": 8, "take_action": 8, "journal": 8, "learn": 8}
    assert all(i.real for i in data.real)
    assert {i.source for i in data.real} == {"fixture"}
    assert len({i.session_id for i in data.real}) == 12
    for item, row in zip(data.real, rows):
        assert item.id == row["id"]
        assert item.session_id == row["session_id"]
        assert item.label == row["label"] and item.labels == tuple(row["labels"])
        assert item.y == CLASSES.index(row["label"])
        assert item.example.therapist == row["therapist"]
        assert item.example.client == row.get("client")
        assert item.example.context == tuple((c["speaker"], c["text"]) for c in row["context"])
    # items without a client reply stay None (the "pair" view then uses an empty second segment)
    assert sum(i.example.client is None for i in data.real) == sum(r.get("client") is None for r in rows)
    assert len(data.data_hash) == 16
    assert data.data_hash == text_sha256(REAL)


def test_load_labeled_data_with_synthetic_and_gz(tmp_path):
    _write_jsonl(tmp_path / "labeled" / "real_dev.jsonl.gz", _rows(REAL), gz=True)
    syn = [{"id": 7, "therapist": "Try a short walk after dinner each day.", "client": "Alright.",
            "label": "take_action"},
           {"id": "s2", "therapist": "Tell me more about that.", "context": [
               {"speaker": "client", "text": "It was a long week."}], "label": "none",
            "labels": ["none", "learn"], "session_id": "syn-s"}]
    syn_p = _write_jsonl(tmp_path / "labeled" / "synthetic.jsonl", syn)
    data = load_labeled_data(tmp_path)
    assert len(data.real) == 60
    assert [i.id for i in data.synthetic] == ["7", "s2"]
    s1, s2 = data.synthetic
    assert not s1.real and s1.source == "synthetic" and s1.session_id == "7"
    assert s1.labels == ("take_action",) and s1.y == CLASSES.index("take_action")
    assert s2.example.client is None and s2.example.context == (("client", "It was a long week."),)
    assert s2.labels == ("none", "learn") and s2.session_id == "syn-s"
    # the hash covers both files and changes when synthetic items are present
    assert data.data_hash == text_sha256(REAL, syn_p)
    assert data.data_hash != load_labeled_data(FIXTURES).data_hash


def test_load_labeled_real_without_dataset_is_unknown(tmp_path):
    p = _write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "therapist": "Hi.", "label": "none"}])
    (item,) = load_labeled(p, real=True)
    assert item.source == "unknown" and item.real and item.session_id == "a"


# --- unlabeled microdialogues ------------------------------------------------------------------------
def _expected_units(path: Path, exclude=()) -> list[tuple]:
    out = []
    for s in _rows(path):
        if s["session_id"] in exclude:
            continue
        _, mds = window_session(session_utterances(s), WindowConfig(), s["session_id"])
        out += [(s["session_id"], m.turn, m.therapist.text, m.client.text if m.client else None) for m in mds]
    return out


def test_unlabeled_microdialogues_on_fixture():
    units = unlabeled_microdialogues(FIXTURES)
    assert units, "the mini corpus yields microdialogues"
    assert {u.source for u in units} == {"mini"}  # tagged by corpus folder name
    assert {u.session_id for u in units} == {f"mini-0{i}" for i in range(1, 7)}
    assert [(u.session_id, u.turn, u.therapist, u.client) for u in units] == _expected_units(MINI)
    assert all(u.therapist.strip() for u in units)
    by_key = {(u.session_id, u.turn): u for u in units}
    first = by_key[("mini-01", 0)]
    assert first.therapist == "Hi, welcome back. How was the week?"
    assert first.client == "Okay. One panic attack, on Monday."
    # consecutive client utterances merge into one client turn
    merged = by_key[("mini-01", 2)]
    assert merged.therapist == "What happened?"
    assert merged.client == "I was in a meeting and my heart started racing. I had to step out."
    # the session's last therapist turn has no reply: flushed at session end with client None
    assert by_key[("mini-01", 13)].client is None


def test_unlabeled_microdialogues_respects_exclude_sessions():
    every = unlabeled_microdialogues(FIXTURES)
    excluded = {"mini-01", "mini-04", "not-a-session"}
    kept = unlabeled_microdialogues(FIXTURES, exclude_sessions=excluded)
    assert {u.session_id for u in kept} == {u.session_id for u in every} - excluded
    assert kept == [u for u in every if u.session_id not in excluded]
    assert unlabeled_microdialogues(FIXTURES, exclude_sessions={f"mini-0{i}" for i in range(1, 7)}) == []


def test_unlabeled_microdialogues_source_filter_and_gz_corpus(tmp_path):
    a = _session("a-1", [("therapist", "How are you today?"), ("client", "Tired."),
                         ("therapist", "Let's try a breathing exercise daily."), ("client", "Okay.")])
    b = _session("b-1", [("therapist", "What brings you in?"), ("client", "Stress at work.")])
    _write_jsonl(tmp_path / "corpora" / "alpha" / "sessions.jsonl", [a])
    _write_jsonl(tmp_path / "corpora" / "beta" / "sessions.jsonl.gz", [b], gz=True)
    assert [p.parent.name for p in corpus_paths(tmp_path)] == ["alpha", "beta"]
    units = unlabeled_microdialogues(tmp_path)
    assert [(u.source, u.session_id, u.turn, u.therapist, u.client) for u in units] == [
        ("alpha", "a-1", 0, "How are you today?", "Tired."),
        ("alpha", "a-1", 2, "Let's try a breathing exercise daily.", "Okay."),
        ("beta", "b-1", 0, "What brings you in?", "Stress at work.")]
    assert {u.source for u in unlabeled_microdialogues(tmp_path, sources=["beta"])} == {"beta"}
    assert unlabeled_microdialogues(tmp_path, sources=["gamma"]) == []


def test_corpus_with_plain_and_gz_copy_is_read_once(tmp_path):
    """Regression: a corpus stored both plain and gzipped was listed (and read) twice."""
    d = tmp_path / "corpora" / "mini"
    d.mkdir(parents=True)
    shutil.copy(MINI, d / "sessions.jsonl")
    _write_jsonl(d / "sessions.jsonl.gz", _rows(MINI), gz=True)
    assert len(corpus_paths(tmp_path)) == 1
    assert len(unlabeled_microdialogues(tmp_path)) == len(unlabeled_microdialogues(FIXTURES))


# --- session folds -----------------------------------------------------------------------------------
def test_session_folds_never_split_a_session_on_fixture():
    data = load_labeled_data(FIXTURES)
    folds = session_folds([i.session_id for i in data.real], 3)
    item_folds = collections.defaultdict(set)
    for i in data.real:
        item_folds[i.session_id].add(folds[i.session_id])
    assert all(len(f) == 1 for f in item_folds.values())
    # 12 sessions over 3 folds: 4 sessions (20 items) per fold
    assert collections.Counter(folds.values()) == {0: 4, 1: 4, 2: 4}
    assert collections.Counter(folds[i.session_id] for i in data.real) == {0: 20, 1: 20, 2: 20}


def test_session_folds_deterministic_and_order_free():
    ids = [f"s{i}" for i in range(30)]
    a = session_folds(ids, 5)
    assert a == session_folds(list(reversed(ids)) + ids[:7], 5)  # order and repeats do not matter
    assert a == session_folds(ids, 5, seed=13)
    assert any(session_folds(ids, 5, seed=s) != a for s in (1, 2, 3))  # the seed does shuffle


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=40),
       n_folds=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_session_folds_properties(ids, n_folds, seed):
    folds = session_folds(ids, n_folds, seed)
    assert set(folds) == set(ids)
    assert set(folds.values()) <= set(range(n_folds))
    sizes = collections.Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1  # balanced by session count
    assert len(sizes) == min(n_folds, len(set(ids)))
    assert session_folds(list(reversed(ids)), n_folds, seed) == folds
