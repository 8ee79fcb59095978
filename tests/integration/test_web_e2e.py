"""End to end in headless Chromium against the running stack: tansu broker, tritonserver (the served
model), Faust worker, store sink, web app, all real processes on free loopback ports.

Three demo sessions replay into the utterances topic while a therapist and a supervisor are logged in:

- the therapist panel of a session with homework shows the homework event as the worker emits it;
- the panel of a session without homework shows the worker's *no homework yet* nudge (the session is
  scheduled for 6 minutes and N = 3, so the rule falls due 3 minutes into it);
- the supervisor's fidelity view goes from no completed session to the new homework rate (2 of 3);
- the therapist cannot open the other therapist's session (the same 404 as a missing one).
"""
from __future__ import annotations

import copy
import threading
import time

import pytest
from playwright.sync_api import expect

from homework_monitor.deploy.local_stack import Ports, start_broker, start_sink, start_triton, start_web, start_worker
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.config import Settings
from homework_monitor.web.users import DEMO_PASSWORD

from .browser import PageErrors, chromium, log_in, require_chromium, screenshot

pytestmark = pytest.mark.integration

WITH_HOMEWORK = "demo-cbt-panic"  # therapist t-01, program cbt-anxiety: practice + journal
WITHOUT_HOMEWORK = "demo-no-homework"  # therapist t-01, cbt-anxiety: no homework
OTHER_THERAPIST = "demo-cbt-social-anxiety"  # therapist t-08, cbt-anxiety: practice + learn
SPEED = 6.0  # each session's ~5 minutes in ~50 s
NO_HOMEWORK_N_MIN = 3.0
QUIET_SCHEDULED_MIN = 6


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_chromium()
    run_dir = tmp_path_factory.mktemp("e2e")
    log_dir = run_dir / "logs"
    ports = Ports.free()
    settings = Settings(run_dir=run_dir, silence_flush_s=3.0, app_id=f"hwm-e2e-{ports.kafka}")
    with ServiceStack() as services:
        settings = start_broker(services, settings, ports, log_dir)
        settings = start_triton(services, settings, ports, log_dir)
        start_worker(services, settings, log_dir, "worker-1", ports.worker_metrics,
                     extra_env={"HWM_NUDGE_NO_HOMEWORK_BEFORE_END_MIN": str(NO_HOMEWORK_N_MIN)})
        start_sink(services, settings, log_dir)
        url = start_web(services, settings, log_dir, extra_env={"HWM_WEB_POLL_INTERVAL_S": "0.3"})
        yield settings, url, log_dir


def _sessions() -> list[dict]:
    by_id = {s["session_id"]: s for s in read_sessions([demo_sessions_dir()])}
    chosen = [copy.deepcopy(by_id[sid]) for sid in (WITH_HOMEWORK, WITHOUT_HOMEWORK, OTHER_THERAPIST)]
    chosen[1]["meta"]["scheduled_minutes"] = QUIET_SCHEDULED_MIN
    return chosen


def _open_when_live(page, base: str, session_id: str, timeout_s: float = 120) -> None:
    """Go to the session's page as soon as the store knows it (the sink has stored its first message)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.goto(f"{base}/sessions/{session_id}").status == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"{session_id} never reached the store")


def _completed(page, base: str) -> int:
    return page.request.get(f"{base}/api/fidelity?window=week").json()["total"]["completed"]


def test_live_stack_panel_nudge_supervisor_rate_and_scope(stack):
    settings, base, log_dir = stack
    with chromium() as browser:
        therapist = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
        supervisor = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        t_errors, s_errors = PageErrors(therapist), PageErrors(supervisor)
        log_in(therapist, base, "therapist1", DEMO_PASSWORD)
        log_in(supervisor, base, "supervisor", DEMO_PASSWORD)
        supervisor.wait_for_selector("[data-testid=total-rate]")
        assert supervisor.inner_text("[data-testid=total-rate]") == "—"  # nothing completed yet

        producer = make_producer(settings)
        replayer = threading.Thread(target=replay, args=(schedule(_sessions(), SPEED, 1.0), producer,
                                                         settings.topics.utterances), kwargs={"progress": False})
        replayer.start()
        try:
            # The panel of the session with homework, opened while it runs: detections arrive over SSE.
            _open_when_live(therapist, base, WITH_HOMEWORK)
            t_errors.errors.clear()  # the 404s of the tries before the session was stored
            assert therapist.inner_text("[data-testid=status]") == "Live"
            therapist.wait_for_selector("#session[data-stream=open]")
            row = therapist.wait_for_selector("tr.detection", timeout=120_000)
            category = row.query_selector(".category").inner_text()
            assert category in {"Practice a skill", "Journal / self-monitor"}
            assert len(row.query_selector(".quote").inner_text()) > 20
            assert row.query_selector(".confidence").inner_text().endswith("%")
            screenshot(therapist, "e2e-therapist-panel")

            # The session without homework: the worker's "no homework yet" nudge reaches its panel.
            quiet = therapist.context.new_page()
            q_errors = PageErrors(quiet)
            _open_when_live(quiet, base, WITHOUT_HOMEWORK)
            q_errors.errors.clear()
            nudge = quiet.wait_for_selector("li.nudge[data-rule=no_homework_yet]", timeout=150_000)
            assert "No homework assigned yet" in nudge.inner_text()
            assert quiet.locator("tr.detection").count() == 0
            screenshot(quiet, "e2e-no-homework-nudge")

            # Both end: the charting notes appear without a reload.
            expect(therapist.locator("#note-panel")).to_be_visible(timeout=150_000)
            assert therapist.inner_text("#note").startswith("Homework assigned (")
            expect(quiet.locator("#note-panel")).to_be_visible(timeout=150_000)
            assert quiet.inner_text("#note") == "No homework assigned this session."
        finally:
            replayer.join(timeout=300)
            producer.close()

        # The supervisor's view: once the three summaries are stored, the rate is 2 of 3.
        deadline = time.monotonic() + 150
        while _completed(supervisor, base) < 3 and time.monotonic() < deadline:
            time.sleep(1)
        supervisor.reload()
        assert supervisor.inner_text("[data-testid=total-rate]") == "67%"
        therapists = supervisor.eval_on_selector_all("[data-testid=therapists] tr[data-therapist-id]",
                                                     "rows => rows.map(r => r.dataset.therapistId)")
        assert therapists == ["t-01", "t-08"]
        t01 = supervisor.inner_text("[data-testid=therapists] tr[data-therapist-id=t-01] [data-testid=rate]")
        assert t01 == "50% (1/2)"
        screenshot(supervisor, "e2e-supervisor-fidelity")

        # A therapist cannot open another therapist's session: the same 404 as a session that does not exist.
        answers = []
        for sid in (OTHER_THERAPIST, "no-such-session"):
            assert therapist.goto(f"{base}/sessions/{sid}").status == 404
            answers.append(therapist.inner_text("main"))
            api = therapist.request.get(f"{base}/api/sessions/{sid}")
            assert api.status == 404 and api.json() == {"detail": "session not found"}
        assert answers[0] == answers[1]
        # ... while the supervisor of the program can.
        assert supervisor.goto(f"{base}/sessions/{OTHER_THERAPIST}").status == 200
        assert supervisor.locator("tr.detection").count() >= 1

        assert [e for e in t_errors.errors if "status of 404" not in e] == []  # the two 404s just above
        assert q_errors.errors == [] and s_errors.errors == []
    # The web app's log names paths and statuses, never a quote or a note.
    web_log = (log_dir / "web.log").read_text()
    assert "GET /api/sessions/" in web_log and "Homework assigned" not in web_log
