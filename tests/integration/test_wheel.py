"""The wheel is a product: one top-level package, the served model inside, and the offline CLI works
from an installed wheel in an empty directory (a fresh venv with the wheel and its `serve` extra)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_SESSIONS = ROOT / "tests" / "fixtures" / "data" / "corpora" / "mini" / "sessions.jsonl"


def run(cmd, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def install(wheel: Path, extra: str, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A fresh venv with ``wheel[extra]``, an empty working directory, and an environment in which nothing
    of the source tree can leak in (no PYTHONPATH, no HWM_* settings): (venv, empty dir, env)."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], timeout=120)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[{extra}]"], timeout=900)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HWM_", "PYTHONPATH"))}
    return venv, empty, env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, ROOT], timeout=300)
    (whl,) = out.glob("homework_monitor-*.whl")
    return whl


def test_wheel_holds_one_top_level_package_and_the_served_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"homework_monitor"}
    artifact = "homework_monitor/triton_models/homework_classifier/1/artifact/"
    for part in ("model.json", "head.safetensors", "encoder/model.onnx", "encoder/tokenizer.json",
                 "student/model.json", "student/head.safetensors",  # the one-pass CPU student (HWM_TRITON_ARTIFACT)
                 "v2_head/model.json", "v2_head/head.safetensors"):  # the two-view head on every label (option)
        assert artifact + part in names
    assert "homework_monitor/triton_models/homework_classifier/config.pbtxt" in names
    for sample in ("therapist", "client", "context"):  # model_warmup's inputs: Triton cannot load without them
        assert f"homework_monitor/triton_models/homework_classifier/warmup/{sample}" in names
    assert not [n for n in names if "__pycache__" in n]
    for part in ("env.py", "script.py.mako", "versions/0001_initial.py"):  # the store migrates from a wheel
        assert f"homework_monitor/store/migrations/{part}" in names


def test_the_store_migrates_from_an_installed_wheel(wheel, tmp_path):
    """The Alembic chain ships in the package: `homework-monitor store migrate` works from an installed
    wheel with only its `store` extra, in an empty directory."""
    venv, empty, env = install(wheel, "store", tmp_path)
    res = run([venv / "bin" / "homework-monitor", "store", "migrate"], cwd=empty, env=env, timeout=300)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["revision"] == "0001" and (empty / "var" / "store.sqlite3").exists()


def test_wheel_ships_the_web_apps_templates_and_static_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    web = ROOT / "web"
    shipped = {p.relative_to(web).as_posix() for p in web.rglob("*")
               if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts}
    assert {"templates/session.html", "static/session.js", "static/vendor/chart.umd.js",
            "static/vendor/chart.js.LICENSE.md"} <= shipped
    assert {f"homework_monitor/web/{p}" for p in shipped} <= names


def test_classify_and_summarize_from_an_installed_wheel_in_an_empty_directory(wheel, tmp_path):
    venv, empty, env = install(wheel, "serve", tmp_path)
    cli = venv / "bin" / "homework-monitor"
    items = [{"id": "x1", "therapist": "This week, write down every craving in a small notebook.",
              "client": "Okay, I can do that."},
             {"id": "x2", "therapist": "How was the drive in today?", "client": "Fine, thanks."}]
    (empty / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    run([cli, "classify", "--input", "items.jsonl", "--output", "labels.jsonl"], cwd=empty, env=env,
        timeout=300)
    labels = [json.loads(line) for line in (empty / "labels.jsonl").read_text().splitlines()]
    assert [r["id"] for r in labels] == ["x1", "x2"]
    assert labels[0]["label"] != "none" and labels[1]["label"] == "none"
    run([cli, "summarize", "--input", FIXTURE_SESSIONS, "--output", "summaries.jsonl"], cwd=empty, env=env,
        timeout=300)
    summaries = [json.loads(line) for line in (empty / "summaries.jsonl").read_text().splitlines()]
    assert len(summaries) == len(FIXTURE_SESSIONS.read_text().splitlines())
    # Each run writes its rejects file beside its output (empty here: every line was valid).
    assert sorted(os.listdir(empty)) == ["items.jsonl", "labels.jsonl", "labels.rejects.jsonl",
                                         "summaries.jsonl", "summaries.rejects.jsonl"]
    assert (empty / "labels.rejects.jsonl").read_text() == (empty / "summaries.rejects.jsonl").read_text() == ""
    # The installed package, not the checkout, answered.
    where = run([venv / "bin" / "python", "-c", "import homework_monitor, sys; print(homework_monitor.__file__)"],
                cwd=empty, env=env).stdout.strip()
    assert where.startswith(str(venv))
