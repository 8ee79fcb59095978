"""Labels added by the project: ids + labels in the repo, text joined from the corpora at load time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from homework_monitor.contract import CLASSES, NONE
from homework_monitor.training.data import ADDED_LABELS_DIR, load_added_labels, read_jsonl

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_DATA = FIXTURES / "data"
# What a committed label row may hold: ids, labels, votes and provenance. Never text.
ALLOWED_KEYS = {"id", "dataset", "session_id", "turn", "label", "labels", "review", "votes", "review_votes",
                "adjudicated", "qa_changed", "pre_qa_labels", "why"}


def test_labels_join_to_the_corpus_utterances(tmp_path):
    items = load_added_labels(FIXTURE_DATA, [FIXTURES / "labels" / "added.jsonl"])
    by_id = {i.id: i for i in items}
    first, second = by_id["f1"], by_id["f2"]
    assert first.example.therapist == "What happened?"
    # The unit is one utterance: the client's reply is the next utterance only, not a merged turn.
    assert first.example.client == "I was in a meeting and my heart started racing."
    assert first.example.context == (("therapist", "Hi, welcome back. How was the week?"),
                                     ("client", "Okay. One panic attack, on Monday."))
    assert [s for s, _ in second.example.context] == ["therapist", "client", "client"]
    assert second.label == "practice" and second.real and second.source == "mini"


@pytest.mark.parametrize("turn", [1, 999])  # a client utterance; past the end of the session
def test_a_label_that_does_not_join_is_an_error(tmp_path, turn):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "dataset": "mini", "session_id": "mini-01", "turn": turn,
                               "label": "none", "labels": ["none"]}) + "\n")
    with pytest.raises(ValueError, match="not found"):
        load_added_labels(FIXTURE_DATA, [bad])


def test_committed_labels_hold_no_text_and_valid_labels():
    rows = [r for p in sorted(ADDED_LABELS_DIR.glob("*.jsonl")) for r in read_jsonl(p)]
    assert len(rows) >= 1920
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({(r["dataset"], r["session_id"], r["turn"]) for r in rows}) == len(rows)
    for r in rows:
        assert set(r) <= ALLOWED_KEYS, set(r) - ALLOWED_KEYS
        assert r["label"] == r["labels"][0] and set(r["labels"]) <= set(CLASSES)
        assert r["labels"] == [NONE] or NONE not in r["labels"]


def test_model_drawn_strata_match_their_label_files():
    """Each strata file's draw is what its label file holds, so pool / drawn weighs each item right."""
    from collections import Counter

    from homework_monitor.training.data import model_drawn_strata
    files = sorted(ADDED_LABELS_DIR.glob("*.strata.json"))
    assert files
    for path in files:
        strata = json.loads(path.read_text())["strata"]
        rows = read_jsonl(path.with_name(path.name.replace(".strata.json", ".jsonl")))
        assert Counter(r["why"] for r in rows) == {why: s["drawn"] for why, s in strata.items()}
        assert all(s["pool"] >= s["drawn"] > 0 for s in strata.values())
    weights = model_drawn_strata()
    assert weights["r4_random"] == pytest.approx(3392 / 466) and weights["r4_both"] == 1.0
    assert "random_clinical" not in weights  # drawn without a model: scored as a labelled item


def test_committed_labels_join_the_shared_corpora():
    from homework_monitor.stream.config import default_data_dir
    data_dir = default_data_dir()
    if not (data_dir / "corpora").is_dir():
        pytest.skip(f"shared corpora not at {data_dir} (set HWM_DATA_DIR)")
    items = load_added_labels(data_dir)
    assert len(items) == sum(1 for p in ADDED_LABELS_DIR.glob("*.jsonl") for _ in read_jsonl(p))
