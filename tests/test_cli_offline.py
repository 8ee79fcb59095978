"""``homework-monitor classify / summarize / review`` in process, with the committed artifact."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from homework_monitor import cli
from homework_monitor.model import Example, HomeworkClassifier
from homework_monitor.stream.aggregation import decide
from homework_monitor.stream.classifiers import InProcessClassifier
from homework_monitor.stream.offline import windowed_sessions
from homework_monitor.stream.schemas import CLASSES, HOMEWORK_CLASSES, SessionSummary
from homework_monitor.stream.windowing import WindowConfig
from homework_monitor.triton_models import SERVED_ARTIFACT as DEFAULT_ARTIFACT

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
MINI = FIXTURES / "corpora" / "mini" / "sessions.jsonl"
TRUTH = FIXTURES / "labeled" / "sessions_dev.jsonl"
SUMMARY_KEYS = set(SessionSummary.model_fields)  # the live summary's fields (offline equals online)
ASSIGNMENT_KEYS = {"turn", "category", "confidence", "start_s", "quote"}

pytestmark = pytest.mark.skipif(not (DEFAULT_ARTIFACT / "model.json").exists(),
                                reason="the committed artifact is missing")

# Written for these tests.
CLASSIFY_INPUT = [
    {"id": "a", "context": [{"speaker": "client", "text": "Work has been overwhelming lately."},
                            {"speaker": "therapist", "text": "That sounds like a lot to carry."}],
     "therapist": "Between now and next week, write down one stressful moment each evening and what you thought.",
     "client": "Okay, I can keep notes on my phone."},
    {"id": "b", "therapist": "How was the drive over here today?"},
    {"id": "c", "context": [], "therapist": "Try the five-minute breathing exercise every morning.", "client": "",
     "label": "practice", "notes": "extra fields are ignored"},
    {"id": "d", "context": [{"speaker": "therapist", "text": "Here is a short article on sleep."}],
     "therapist": "Read it before our next session and mark anything that surprises you.", "client": "Will do."},
]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sessions() -> list[dict]:
    return _read(MINI)


@pytest.fixture(scope="module")
def clf() -> HomeworkClassifier:
    return HomeworkClassifier(DEFAULT_ARTIFACT)


_LOADED: dict[Path, HomeworkClassifier] = {}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, clf):
    # default settings only: no HWM_* overrides, no stray .env in the working directory
    for var in ("HWM_ARTIFACT_DIR", "HWM_EVENT_THRESHOLD", "HWM_CONTEXT_TURNS", "HWM_SILENCE_FLUSH_S",
                "HWM_TRITON_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    # Each command loads its artifact once per call; reuse the one already loaded for the default
    # artifact (and remember which paths were asked for) to keep these tests quick.
    _LOADED.setdefault(DEFAULT_ARTIFACT.resolve(), clf)
    requested = []

    def load(self):
        if self._model is None:
            key = Path(self.artifact).resolve()
            requested.append(key)
            if key not in _LOADED:
                _LOADED[key] = HomeworkClassifier(self.artifact)
            self._model = _LOADED[key]
            self.model_version = self._model.version
        return self._model

    monkeypatch.setattr(InProcessClassifier, "load", load)
    return requested


def _direct_windowed(clf):
    windowed = list(windowed_sessions(_sessions(), WindowConfig()))
    mds = [m for _, ms in windowed for m in ms]
    return windowed, mds, clf.predict_proba([m.example() for m in mds])


# --- classify ------------------------------------------------------------------------------------
def test_classify_writes_labels_and_scores(tmp_path, clf, capsys, _isolated):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out" / "labels.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in CLASSIFY_INPUT) + "\n")
    cli.main(["classify", "--input", str(inp), "--output", str(out)])
    assert _isolated == [DEFAULT_ARTIFACT.resolve()]  # the committed artifact is the default
    assert "classified 4 microdialogues" in capsys.readouterr().err
    rows = _read(out)
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    for r in rows:
        assert set(r) == {"id", "label", "scores"}
        assert r["label"] in CLASSES
        assert list(r["scores"]) == list(CLASSES)
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert all(0.0 <= v <= 1.0 for v in r["scores"].values())
        assert r["label"] == max(r["scores"], key=r["scores"].get)

    # in-process results equal HomeworkClassifier.predict_proba on the same examples
    examples = [Example(therapist=d["therapist"], client=d.get("client") or None,
                        context=tuple((c["speaker"], c["text"]) for c in d.get("context", [])))
                for d in CLASSIFY_INPUT]
    direct = clf.predict_proba(examples)
    got = np.array([[r["scores"][c] for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, direct, atol=2e-5)
    assert [r["label"] for r in rows] == [CLASSES[i] for i in direct.argmax(1)]


def test_classify_explicit_artifact_and_empty_input(tmp_path, _isolated):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("")
    cli.main(["classify", "--input", str(inp), "--output", str(out), "--artifact", str(DEFAULT_ARTIFACT)])
    assert out.exists() and _read(out) == []


# --- bad input lines: rejects file, exit 2, no text on stderr (issue 8, defect 8) -------------------
SECRET = "Marmoset-Tangerine my cousin Bartholomew"  # distinctive text that must never reach stderr


def _bad_classify_lines() -> dict[str, bytes]:
    good = {"id": "bad", "therapist": f"Write about {SECRET} tonight."}
    return {
        "malformed_json": b'{"id": "m", "therapist": "' + SECRET.encode() + b'"',
        "schema_error": json.dumps({"id": "x", "client": SECRET}).encode(),               # no therapist
        "oversized_text": json.dumps({**good, "therapist": SECRET * 120}).encode(),     # > 4000 chars
        "oversized_payload": json.dumps({**good, "therapist": SECRET * 50_000}).encode(),  # a 2 MB line
        "invalid_encoding": json.dumps({**good, "client": "a\udc80" + SECRET}).encode(),
        "too_deep": b'{"id": "d", "therapist": "x", "notes": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "not_utf8": SECRET.encode() + b"\xff\n",
    }


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))


def test_classify_writes_good_lines_and_rejects_bad_ones(tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "labels.jsonl"
    bad = _bad_classify_lines()
    lines = [json.dumps(CLASSIFY_INPUT[0]).encode(), *bad.values(), b"   ",
             json.dumps(CLASSIFY_INPUT[1]).encode()]
    _write_lines(inp, lines)
    assert cli.main(["classify", "--input", str(inp), "--output", str(out)]) == 2
    assert [r["id"] for r in _read(out)] == ["a", "b"]
    rejects = _read(tmp_path / "labels.rejects.jsonl")
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "malformed_json"), (3, "schema_error"), (4, "oversized_text"), (5, "oversized_payload"),
        (6, "invalid_encoding"), (7, "too_deep"), (8, "invalid_encoding")]
    assert all(set(r) == {"line", "reason", "detail"} for r in rejects)
    captured = capsys.readouterr()
    assert captured.out == ""
    err_lines = captured.err.strip().splitlines()
    assert err_lines[-1].startswith("error: rejected 7 line(s) of ") and "labels.rejects.jsonl" in err_lines[-1]
    assert "Traceback" not in captured.err
    for text in (captured.err, (tmp_path / "labels.rejects.jsonl").read_text()):
        assert "Marmoset" not in text and "Bartholomew" not in text


def test_classify_rejects_a_line_without_therapist(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    inp.write_text(json.dumps({"id": "x", "client": "hello"}) + "\n")
    assert cli.main(["classify", "--input", str(inp), "--output", str(out)]) == 2
    assert _read(out) == []
    assert _read(tmp_path / "o.rejects.jsonl") == [
        {"line": 1, "reason": "schema_error", "detail": "therapist: missing"}]


def test_classify_text_limit_is_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("HWM_MAX_TEXT_CHARS", "40")
    inp, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    _write_lines(inp, [json.dumps({"id": "short", "therapist": "x" * 40}).encode(),
                       json.dumps({"id": "long", "therapist": "x" * 41}).encode(),
                       json.dumps({"id": "ctx", "therapist": "x", "context": [
                           {"speaker": "client", "text": "y" * 41}]}).encode()])
    assert cli.main(["classify", "--input", str(inp), "--output", str(out)]) == 2
    assert [r["id"] for r in _read(out)] == ["short"]
    assert [(r["line"], r["reason"], r["detail"]) for r in _read(tmp_path / "o.rejects.jsonl")] == [
        (2, "oversized_text", "therapist has 41 chars, limit 40"),
        (3, "oversized_text", "context.0.text has 41 chars, limit 40")]


def test_all_good_lines_exit_0_with_an_empty_rejects_file(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    _write_lines(inp, [json.dumps(CLASSIFY_INPUT[1]).encode()])
    assert cli.main(["classify", "--input", str(inp), "--output", str(out)]) == 0
    assert (tmp_path / "o.rejects.jsonl").read_text() == ""


def _bad_session_lines() -> list[bytes]:
    s = _sessions()[0]
    too_long = {**s, "utterances": [*s["utterances"][:3], {"speaker": "client", "text": SECRET * 200},
                                    *s["utterances"][3:]]}
    bad_time = {**s, "utterances": [{**s["utterances"][0], "start_s": float("nan")}, *s["utterances"][1:]]}
    return [json.dumps(too_long).encode(), b"{" + SECRET.encode(), json.dumps(bad_time).encode(),
            json.dumps({**s, "session_id": SECRET}).encode()]


def test_summarize_rejects_a_session_with_an_invalid_utterance_as_a_whole(tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "summaries.jsonl"
    good = MINI.read_bytes().splitlines()
    _write_lines(inp, [good[0], *_bad_session_lines(), *good[1:]])
    assert cli.main(["summarize", "--input", str(inp), "--output", str(out)]) == 2
    assert [r["session_id"] for r in _read(out)] == [s["session_id"] for s in _sessions()]
    assert [(r["line"], r["reason"], r["detail"]) for r in _read(tmp_path / "summaries.rejects.jsonl")] == [
        (2, "oversized_text", f"utterances.3: text has {len(SECRET) * 200} chars, limit 4000"),
        (3, "malformed_json", "not JSON: JSONDecodeError at pos 1"),
        (4, "schema_error", "utterances.0: utterance.start_s: finite_number"),
        (5, "schema_error", "session_id: string_pattern_mismatch")]
    captured = capsys.readouterr()
    assert "Marmoset" not in captured.err and "Traceback" not in captured.err
    assert "rejected 4 line(s)" in captured.err


def test_summarize_session_results_do_not_depend_on_the_rejected_lines(tmp_path):
    clean, mixed = tmp_path / "clean.jsonl", tmp_path / "mixed.jsonl"
    good = MINI.read_bytes().splitlines()
    _write_lines(mixed, [*_bad_session_lines(), *good])
    assert cli.main(["summarize", "--input", str(MINI), "--output", str(clean)]) == 0
    assert cli.main(["summarize", "--input", str(mixed), "--output", str(mixed.with_suffix(".out"))]) == 2
    def results(path):  # when each summary was written aside
        return [{k: v for k, v in r.items() if k != "emitted_at"} for r in _read(path)]
    assert results(mixed.with_suffix(".out")) == results(clean)


def test_review_rejects_bad_sessions_and_reviews_the_rest(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "review.jsonl"
    _write_lines(inp, [*MINI.read_bytes().splitlines(), *_bad_session_lines()])
    assert cli.main(["review", "--input", str(inp), "--output", str(out), "--max-confidence", "0.99"]) == 2
    assert {r["session_id"] for r in _read(out)} <= {s["session_id"] for s in _sessions()} and _read(out)
    assert [r["line"] for r in _read(tmp_path / "review.rejects.jsonl")] == [7, 8, 9, 10]


# --- unexpected errors: one line, no traceback, no record text ------------------------------------
def test_missing_input_is_one_line_and_exit_1(tmp_path, capsys):
    code = cli.main(["classify", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "FileNotFoundError: No such file or directory" in err and "Traceback" not in err


def _artifact_whose_error_quotes_text(tmp_path: Path) -> Path:
    """An artifact whose model.json has a key made of transcript text: the loader's TypeError quotes it."""
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    spec = json.loads((DEFAULT_ARTIFACT / "model.json").read_text())
    (artifact / "model.json").write_text(json.dumps({**spec, SECRET: 1}))
    return artifact


def test_an_exception_quoting_text_prints_only_its_type(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HWM_DEBUG", raising=False)
    inp = tmp_path / "in.jsonl"
    _write_lines(inp, [json.dumps(CLASSIFY_INPUT[1]).encode()])
    argv = ["classify", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
            "--artifact", str(_artifact_whose_error_quotes_text(tmp_path))]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("homework-monitor classify: error: TypeError at ") and len(err.strip().splitlines()) == 1
    assert "Marmoset" not in err and "Traceback" not in err
    monkeypatch.setenv("HWM_DEBUG", "1")  # for a developer: the exception itself
    with pytest.raises(TypeError, match="Marmoset"):
        cli.main(argv)


def test_main_returns_the_status_the_console_script_exits_with(tmp_path):
    import subprocess
    import sys
    inp = tmp_path / "in.jsonl"
    _write_lines(inp, [b"{broken " + SECRET.encode()])
    proc = subprocess.run([str(Path(sys.executable).with_name("homework-monitor")), "classify", "--input", str(inp),
                           "--output", str(tmp_path / "o.jsonl")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Marmoset" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


# --- summarize ----------------------------------------------------------------------------------
def test_summarize_writes_contract_and_prints_metrics(tmp_path, clf, capsys):
    out = tmp_path / "summaries.jsonl"
    cli.main(["summarize", "--input", str(MINI), "--output", str(out), "--truth", str(TRUTH)])
    captured = capsys.readouterr()
    assert "summarized 6 sessions" in captured.err
    metrics = json.loads(captured.out)
    assert set(metrics) == {"threshold", "sessions", "accuracy", "precision", "recall"}
    assert metrics["threshold"] == 0.6 and metrics["sessions"] == 6  # the default event threshold
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("accuracy", "precision", "recall"))

    rows = _read(out)
    sessions = _sessions()
    assert [r["session_id"] for r in rows] == [s["session_id"] for s in sessions]  # one per session

    # the same windowing + decision done by hand, with the classifier called directly
    windowed, mds, probs = _direct_windowed(clf)
    expected, i = {}, 0
    for state, ms in windowed:
        for md, p in zip(ms, probs[i:i + len(ms)]):
            d = decide(dict(zip(CLASSES, map(float, p))), 0.6)
            if d.is_homework:
                expected[(state.session_id, md.turn)] = (d.category, d.confidence, md.therapist)
        i += len(ms)

    got = {}
    for r in rows:
        assert set(r) == SUMMARY_KEYS
        assert r["homework_assigned"] == bool(r["assignments"])
        assert r["categories"] == sorted({a["category"] for a in r["assignments"]})
        assert [a["turn"] for a in r["assignments"]] == sorted(a["turn"] for a in r["assignments"])
        for a in r["assignments"]:
            assert set(a) == ASSIGNMENT_KEYS
            assert a["category"] in HOMEWORK_CLASSES and 0.6 <= a["confidence"] <= 1.0
            got[(r["session_id"], a["turn"])] = a
    assert expected and set(got) == set(expected)
    for key, a in got.items():
        category, confidence, therapist = expected[key]
        assert a["category"] == category
        assert a["confidence"] == pytest.approx(confidence, abs=2e-5)
        assert a["quote"] == therapist.text  # the therapist turn (short turns are quoted whole)
        assert a["start_s"] == therapist.start_s

    # the printed metrics are the session metrics of these summaries against the truth file
    from homework_monitor.training.metrics import session_metrics
    truth = {d["session_id"]: d["homework"] for d in _read(TRUTH)}
    assert {k: metrics[k] for k in ("sessions", "accuracy", "precision", "recall")} == \
        session_metrics(truth, {r["session_id"]: r["homework_assigned"] for r in rows})


def test_summarize_threshold_zero_flags_every_non_none_top_class(tmp_path, clf, capsys):
    out = tmp_path / "s.jsonl"
    cli.main(["summarize", "--input", str(MINI), "--output", str(out), "--threshold", "0"])
    assert capsys.readouterr().out == ""  # no --truth, no metrics
    windowed, mds, probs = _direct_windowed(clf)
    flagged = {(m.session_id, m.turn) for m, p in zip(mds, probs) if CLASSES[int(p.argmax())] != "none"}
    got = {(r["session_id"], a["turn"]) for r in _read(out) for a in r["assignments"]}
    assert got == flagged


# --- review --------------------------------------------------------------------------------------
def test_review_writes_low_confidence_rows_sorted(tmp_path, clf, capsys):
    out = tmp_path / "review.jsonl"
    cli.main(["review", "--input", str(MINI), "--output", str(out), "--max-confidence", "0.99"])
    _, mds, probs = _direct_windowed(clf)
    tops = probs.max(1)
    n_low = int((tops < 0.99).sum())
    assert f"{n_low} of {len(mds)} microdialogues below confidence 0.99" in capsys.readouterr().err
    rows = _read(out)
    assert len(rows) == n_low >= 2
    conf = [r["confidence"] for r in rows]
    assert conf == sorted(conf)
    assert conf == pytest.approx(sorted(np.round(tops[tops < 0.99], 4).tolist()), abs=2e-4)
    by_turn = {(m.session_id, m.turn): m for m in mds}
    for r in rows:
        assert r["label"] is None  # for the expert to fill in
        assert r["confidence"] < 0.99
        assert r["predicted"] in CLASSES and r["predicted"] == max(r["scores"], key=r["scores"].get)
        assert r["confidence"] == pytest.approx(max(r["scores"].values()), abs=2e-4)
        md = by_turn[(r["session_id"], r["turn"])]
        assert r["therapist"] == md.therapist.text
        assert r["client"] == (md.client.text if md.client else None)
        assert r["context"] == [{"speaker": t.speaker, "text": t.text} for t in md.context]


def test_review_limit_keeps_the_least_confident(tmp_path):
    full, top2 = tmp_path / "all.jsonl", tmp_path / "two.jsonl"
    cli.main(["review", "--input", str(MINI), "--output", str(full), "--max-confidence", "0.99"])
    cli.main(["review", "--input", str(MINI), "--output", str(top2), "--max-confidence", "0.99",
              "--limit", "2"])
    assert _read(top2) == _read(full)[:2]
    nothing = tmp_path / "none.jsonl"
    cli.main(["review", "--input", str(MINI), "--output", str(nothing), "--max-confidence", "0"])
    assert _read(nothing) == []


def test_iter_lines_numbers_lines_and_skips_long_ones_unread(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a" * 10 + b"\r\n" + b"  \n" + b"b" * 11 + b"\n" + b"c" * 5_000_000 + b"\n" + b"d")
    assert list(cli.iter_lines(path, 10)) == [(1, b"a" * 10), (3, None), (4, None), (5, b"d")]
