"""The web app in headless Chromium: `homework-monitor web` (a real uvicorn process) over a SQLite store
filled through the store's write API (what the sink calls), driven by Playwright.

The therapist panel updates without reload (server-sent events), takes thumbs up/down, shows the
charting note and copies it; the no-homework nudge shows; another therapist's session is not found; the
supervisor's fidelity view draws its chart, lists live sessions, drills down, and shows a rate that moves
when a session ends. Screenshots go to HWM_SCREENSHOT_DIR when it is set (docs/screenshots/).
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from homework_monitor.deploy.local_stack import start_web
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.store.access import audit_entries
from homework_monitor.store.db import Store
from homework_monitor.store.ingest import apply
from homework_monitor.store.models import FeedbackRow
from homework_monitor.stream.aggregation import charting_note
from homework_monitor.stream.config import Settings
from homework_monitor.stream.schemas import Assignment, HomeworkEvent, SessionSummary, stable_id
from homework_monitor.web.users import DEMO_PASSWORD
from tests.web_seed import MODEL, QUOTES, Seeded, seed

from .browser import PageErrors, chromium, log_in, require_chromium, screenshot

pytestmark = pytest.mark.integration


class WebOverStore:
    def __init__(self, url: str, store: Store, seeded: Seeded):
        self.url, self.store, self.seeded = url, store, seeded

    def apply(self, *messages) -> None:
        with self.store.session() as db:
            for m in messages:
                apply(db, m)


@pytest.fixture
def web(tmp_path) -> WebOverStore:
    require_chromium()
    store = Store.open(url=f"sqlite:///{tmp_path / 'store.sqlite3'}")
    seeded = seed(store, datetime.now(UTC))
    with ServiceStack() as stack:
        url = start_web(stack, Settings(run_dir=tmp_path), tmp_path / "logs",
                        extra_env={"HWM_WEB_POLL_INTERVAL_S": "0.2"})
        yield WebOverStore(url, store, seeded)
    store.close()


def _event(sid: str, turn: int, category: str, quote: str) -> HomeworkEvent:
    return HomeworkEvent(event_id=stable_id("event", sid, turn, MODEL), session_id=sid, therapist_id="t-01",
                         program_id="cbt-anxiety", client_id="c-203", turn=turn, category=category, confidence=0.83,
                         scores={category: 0.83}, quote=quote, start_s=1560.0, trigger_seq=turn + 1,
                         emitted_at=time.time(), model_version=MODEL)


def _summary(sid: str, assignments: list[Assignment], client: str = "c-203") -> SessionSummary:
    return SessionSummary(summary_id=stable_id("summary", sid, MODEL), session_id=sid, therapist_id="t-01",
                          client_id=client, program_id="cbt-anxiety", homework_assigned=bool(assignments),
                          categories=sorted({a.category for a in assignments}), assignments=assignments,
                          note=charting_note(assignments, 0.0), n_utterances=80, n_microdialogues=40,
                          emitted_at=time.time(), model_version=MODEL)


def test_therapist_panel_updates_live_takes_feedback_and_copies_the_note(web):
    s = web.seeded
    sid = s.live_with_homework
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1280, "height": 860},
                                  permissions=["clipboard-read", "clipboard-write"])
        page = ctx.new_page()
        errors = PageErrors(page)
        page.goto(f"{web.url}/sessions/{sid}")
        assert "/login?next=" in page.url  # not logged in: the login form, and nothing else
        screenshot(page, "login", full_page=False)
        page.fill("input[name=username]", "therapist1")
        page.fill("input[name=password]", DEMO_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{web.url}/sessions/{sid}")
        page.wait_for_selector("#session[data-stream=open]")
        assert page.locator("tr.detection").count() == 2
        review = page.locator("li.nudge[data-rule=review_previous]")
        assert "consider reviewing it" in review.inner_text() and QUOTES["take_action"][:40] in review.inner_text()

        # A detection stored while the page is open appears without a reload.
        quote = "Try the worry-postponement exercise once a day and note how long the worry lasted."
        new = _event(sid, 60, "practice", quote)
        web.apply(new)
        row = page.wait_for_selector(f"tr.detection[data-event-id='{new.event_id}']", timeout=10_000)
        assert quote in row.inner_text() and "26:00" in row.inner_text() and "83%" in row.inner_text()
        assert page.inner_text("#homework-count") == "3"

        # Thumbs up on the first detection: pressed, and stored as this clinician's feedback.
        first = page.locator("tr.detection").first
        first.locator(".thumb.up").click()
        page.wait_for_selector("tr.detection >> nth=0 >> .thumb.up[aria-pressed=true]")
        with web.store.session() as db:
            votes = [(f.event_id, f.user_id, f.vote) for f in db.scalars(select(FeedbackRow))]
        assert votes == [(s.events[sid][0], "therapist1", 1)]
        screenshot(page, "therapist-panel-live")

        # The session ends: the charting note appears; the copy button puts it on the clipboard.
        done = [Assignment(turn=60, category="practice", confidence=0.83, start_s=1560.0, quote=quote)]
        web.apply(_summary(sid, done))
        page.wait_for_selector("#note-panel:not([hidden])", timeout=10_000)
        assert page.inner_text("#status-badge") == "Ended"
        note = page.inner_text("#note")
        assert note.startswith("Homework assigned (Practice a skill):") and quote in note
        page.click("#copy-note")
        page.wait_for_selector("#copy-status:has-text('Copied.')")
        assert page.evaluate("navigator.clipboard.readText()") == note
        screenshot(page, "therapist-panel-ended")
        # One page view, one stream: the stream closed at the summary and did not reconnect (each
        # reconnection would be another audited view).
        time.sleep(4)
        with web.store.session() as db:
            actions = [e.action for e in audit_entries(db, session_id=sid, user_id="therapist1")]
        assert sorted(actions) == ["feedback", "view_session_page", "view_session_stream"]
        assert errors.errors == []


def test_the_no_homework_nudge_shows_and_another_therapists_session_is_not_found(web):
    s = web.seeded
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 700})
        errors = PageErrors(page)
        log_in(page, web.url, "therapist1", DEMO_PASSWORD, f"/sessions/{s.live_no_homework}")
        nudge = page.wait_for_selector("li.nudge[data-rule=no_homework_yet]")
        assert "No homework assigned yet" in nudge.inner_text() and "at 40:00" in nudge.inner_text()
        assert page.is_visible("#detections-empty")
        screenshot(page, "therapist-panel-no-homework-nudge")
        assert errors.errors == []
        # Another therapist's session (same program) and a session that does not exist: the same page.
        texts = []
        for sid in (s.ended_t08, "no-such-session"):
            resp = page.goto(f"{web.url}/sessions/{sid}")
            assert resp.status == 404
            texts.append(page.inner_text("main"))
        assert texts[0] == texts[1] == "Not found\n\nsession not found\n\nBack"
        screenshot(page, "therapist-other-session-not-found", full_page=False)
        # The session list holds only t-01's sessions.
        page.goto(f"{web.url}/sessions")
        page.wait_for_selector("#live tr")
        ids = page.eval_on_selector_all("tr[data-session-id]", "rows => rows.map(r => r.dataset.sessionId)")
        assert s.live_with_homework in ids and s.ended_t01 in ids
        assert s.ended_t08 not in ids and s.other_program not in ids
        # The two 404 navigations above are the only resource errors.
        assert [e for e in errors.errors if "status of 404" not in e] == []


def test_supervisor_sees_figures_chart_live_list_and_an_updated_rate(web):
    s = web.seeded
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = PageErrors(page)
        log_in(page, web.url, "supervisor", DEMO_PASSWORD)
        assert page.url == f"{web.url}/fidelity"
        page.wait_for_selector("#trend[data-rendered=true]")
        assert page.inner_text("[data-testid=total-rate]") == "67%"  # 2 of 3 sessions ended this week
        therapists = page.eval_on_selector_all("[data-testid=therapists] tr[data-therapist-id]",
                                               "rows => rows.map(r => r.dataset.therapistId)")
        assert therapists == ["t-01", "t-08"]
        live = page.eval_on_selector_all("#live tr", "rows => rows.map(r => r.dataset.sessionId)")
        assert sorted(live) == sorted([s.live_with_homework, s.live_no_homework])
        text = page.inner_text("body")
        assert not any(q[:30] in text for q in s.quotes)  # no quote in the aggregate view
        screenshot(page, "supervisor-fidelity")

        # The quiet session ends with homework (after its nudge): the live list drops it, the rate moves.
        late = _event(s.live_no_homework, 95, "journal", "Keep a short log of each worry this week, with the time.")
        web.apply(late, _summary(s.live_no_homework, [Assignment(turn=95, category="journal", confidence=0.83,
                                                                 start_s=2700.0, quote=late.quote)], "c-204"))
        expect(page.locator("#live tr")).to_have_count(1, timeout=10_000)
        page.reload()
        assert page.inner_text("[data-testid=total-rate]") == "75%"  # 3 of 4
        row = page.locator("[data-testid=therapists] tr[data-therapist-id=t-01]")
        assert "100% (2/2)" in row.inner_text() and "100% (1/1)" in row.locator("td").nth(6).inner_text()

        # Drill-down: from the window's session list to one session, with its quotes and note.
        page.click(f"[data-testid=window-sessions] a[href='/sessions/{s.ended_t01}']")
        page.wait_for_url(f"{web.url}/sessions/{s.ended_t01}")
        assert page.locator("tr.detection").count() == 2
        assert page.inner_text("#note").startswith("Homework assigned (")
        assert "reviewed in this session" in page.inner_text("#followup")
        screenshot(page, "supervisor-drilldown")
        assert errors.errors == []
        # Out of the program: not found.
        assert page.goto(f"{web.url}/sessions/{s.other_program}").status == 404
        errors.errors.clear()  # the 404 navigation's own console line

        # Logging out ends it: the session page asks for a login again.
        page.goto(f"{web.url}/fidelity")
        page.click("text=Log out")
        page.wait_for_url(f"{web.url}/login")
        page.goto(f"{web.url}/sessions/{s.ended_t01}")
        assert "/login?next=" in page.url
        assert errors.errors == []


def test_screenshots_are_kept_in_docs():
    """The committed screenshots exist (docs/SURFACES.md shows them); refreshed by running this file with
    HWM_SCREENSHOT_DIR=docs/screenshots."""
    shots = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    for name in ("login", "therapist-panel-live", "therapist-panel-ended", "therapist-panel-no-homework-nudge",
                 "supervisor-fidelity", "supervisor-drilldown"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
