"""The web app against a real SQLite store filled through the store's write API (FastAPI's TestClient).

Covers: login, cookies and their hashes, expiry and logout; 401/redirect without a login and nothing
leaking; scoping (a therapist's own sessions, a supervisor's program) with out-of-scope answered exactly
like missing; the audit log; clinician feedback; CSRF on every POST; the live event stream; the
aggregate views carrying no quote.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from homework_monitor.store.access import audit_entries
from homework_monitor.store.db import Store
from homework_monitor.store.ingest import apply
from homework_monitor.store.models import FeedbackRow, LoginSessionRow
from homework_monitor.stream.config import Settings, WebSettings
from homework_monitor.stream.schemas import HomeworkEvent, SessionSummary, stable_id
from homework_monitor.web.app import create_app
from homework_monitor.web.security import CSRF_COOKIE, SESSION_COOKIE, CsrfSigner
from homework_monitor.web.users import DEMO_PASSWORD, UserDirectory, UserEntry, demo_directory
from tests.web_seed import MODEL, Seeded, seed

SECRET = "test-secret-key"


@pytest.fixture(scope="module")
def demo_users() -> UserDirectory:
    return demo_directory()  # Argon2 hashing once per module


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store.open(url=f"sqlite:///{tmp_path / 'store.sqlite3'}")
    yield s
    s.close()


@pytest.fixture
def seeded(store) -> Seeded:
    return seed(store, datetime.now(UTC))


def make_settings(tmp_path: Path, **web) -> Settings:
    return Settings(run_dir=tmp_path, web=WebSettings(secret_key=SECRET, poll_interval_s=0.05, **web))


@pytest.fixture
def app(tmp_path, store, seeded, demo_users):
    return create_app(make_settings(tmp_path), store, demo_users)


def client_for(app) -> TestClient:
    return TestClient(app, base_url="http://testserver")


def csrf_token(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text) or \
        re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert m, page.text[:500]
    return m.group(1)


def login(app, username: str, password: str = DEMO_PASSWORD) -> TestClient:
    c = client_for(app)
    r = c.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(c),
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    return c


def page_csrf(c: TestClient) -> str:
    return csrf_token(c, "/sessions")


# --- without a login -----------------------------------------------------------------------------
def test_pages_redirect_to_login_and_say_nothing_else(app, seeded):
    c = client_for(app)
    answers = {}
    for path in ("/", "/sessions", "/fidelity", f"/sessions/{seeded.live_with_homework}",
                 "/sessions/no-such-session", f"/sessions/{seeded.other_program}"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=")
        assert r.content == b""
        answers[path] = (r.status_code, dict(r.headers))
    # An existing and a missing session id get the same answer (the location echoes the typed path).
    a, b = answers[f"/sessions/{seeded.live_with_homework}"], answers["/sessions/no-such-session"]
    a[1].pop("location"), b[1].pop("location")
    assert a == b


def test_api_answers_401_identically_for_everything(app, seeded):
    c = client_for(app)
    bodies = set()
    for path in ("/api/live", "/api/me", "/api/fidelity", "/api/fidelity/trend",
                 f"/api/sessions/{seeded.live_with_homework}", "/api/sessions/no-such-session",
                 f"/api/sessions/{seeded.live_with_homework}/stream", "/api/sessions/nope/stream"):
        r = c.get(path)
        assert r.status_code == 401, path
        bodies.add(r.content)
    r = c.post(f"/api/sessions/{seeded.live_with_homework}/feedback",
               json={"event_id": seeded.events[seeded.live_with_homework][0], "vote": "up"})
    assert r.status_code == 401
    bodies.add(r.content)
    assert bodies == {b'{"detail":"login required"}'}


def test_an_invalid_or_forged_cookie_is_no_login(app, seeded):
    c = client_for(app)
    c.cookies.set(SESSION_COOKIE, "forged-token-value")
    assert c.get("/api/live").status_code == 401
    assert c.get("/sessions", follow_redirects=False).status_code == 303


# --- login ---------------------------------------------------------------------------------------
def test_login_sets_a_private_cookie_and_the_store_keeps_only_its_hash(app, store, tmp_path):
    c = client_for(app)
    r = c.post("/login", data={"username": "therapist1", "password": DEMO_PASSWORD, "csrf_token": csrf_token(c),
                               "next": "/sessions"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sessions"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Max-Age=28800" in cookie  # session_ttl_minutes = 480
    token = c.cookies[SESSION_COOKIE]
    with store.session() as db:
        rows = db.scalars(select(LoginSessionRow)).all()
    assert [r.token_hash for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert rows[0].user_id == "therapist1" and rows[0].therapist_id == "t-01"
    assert token.encode() not in (tmp_path / "store.sqlite3").read_bytes()
    assert c.get("/api/me").json() == {"user_id": "therapist1", "role": "therapist", "therapist_id": "t-01",
                                       "program_id": "cbt-anxiety"}


def test_wrong_password_and_unknown_user_get_the_same_answer(app):
    answers = []
    for user, pw in (("therapist1", "wrong-password"), ("nobody", "wrong-password"), ("therapist1", "")):
        c = client_for(app)
        r = c.post("/login", data={"username": user, "password": pw, "csrf_token": csrf_token(c)},
                   follow_redirects=False)
        assert r.status_code == 401
        assert SESSION_COOKIE not in c.cookies
        answers.append(_strip_tokens(r.text))
    assert "Wrong user name or password." in answers[0]
    assert answers[0] == answers[1] == answers[2]


def test_login_redirects_only_to_local_paths(app):
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example/", "/"),
                             ("/\\evil.example", "/"), ("/fidelity?window=month", "/fidelity?window=month")):
        c = client_for(app)
        r = c.post("/login", data={"username": "supervisor", "password": DEMO_PASSWORD,
                                   "csrf_token": csrf_token(c), "next": target}, follow_redirects=False)
        assert r.headers["location"] == expected


def test_a_login_expires(tmp_path, store, seeded, demo_users):
    app = create_app(make_settings(tmp_path, session_ttl_minutes=0.04), store, demo_users)  # 2.4 s
    c = login(app, "therapist1")
    assert c.get("/api/live").status_code == 200
    time.sleep(2.6)
    assert c.get("/api/live").status_code == 401
    assert c.get(f"/sessions/{seeded.live_with_homework}", follow_redirects=False).status_code == 303


def test_logout_ends_the_login_at_once(app, seeded):
    c = login(app, "therapist1")
    token = c.cookies[SESSION_COOKIE]
    r = c.post("/logout", data={"csrf_token": page_csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    replay = client_for(app)
    replay.cookies.set(SESSION_COOKIE, token)  # the old token, as a stolen cookie would be used
    assert replay.get("/api/live").status_code == 401


def test_a_user_removed_from_the_users_file_is_logged_out(tmp_path, store, seeded, demo_users):
    c = login(create_app(make_settings(tmp_path), store, demo_users), "therapist1")
    fewer = UserDirectory([u for u in demo_users.users.values() if u.username != "therapist1"])
    later = client_for(create_app(make_settings(tmp_path), store, fewer))
    later.cookies.set(SESSION_COOKIE, c.cookies[SESSION_COOKIE])
    assert later.get("/api/live").status_code == 401
    # ... and one whose scope changed is too (the stored login carries the old scope).
    moved = UserDirectory([UserEntry(**{**u.model_dump(), "therapist_id": "t-99"}) if u.username == "therapist1"
                           else u for u in demo_users.users.values()])
    later = client_for(create_app(make_settings(tmp_path), store, moved))
    later.cookies.set(SESSION_COOKIE, c.cookies[SESSION_COOKIE])
    assert later.get("/api/live").status_code == 401


# --- CSRF ----------------------------------------------------------------------------------------
def test_every_post_needs_a_valid_csrf_token(app, seeded):
    # Login without, or with a token signed by another key.
    c = client_for(app)
    csrf_token(c)  # sets the nonce cookie
    for token in ("", "garbage", CsrfSigner("other-key", 3600).token_for(c.cookies[CSRF_COOKIE])):
        r = c.post("/login", data={"username": "therapist1", "password": DEMO_PASSWORD, "csrf_token": token},
                   follow_redirects=False)
        assert r.status_code == 403 and "The login form had expired" in r.text  # a fresh form to retry
        assert SESSION_COOKIE not in c.cookies
    # Feedback: without the header, with another browser's token, with a valid one.
    c = login(app, "therapist1")
    event = seeded.events[seeded.live_with_homework][0]
    url = f"/api/sessions/{seeded.live_with_homework}/feedback"
    assert c.post(url, json={"event_id": event, "vote": "up"}).status_code == 403
    other = login(app, "therapist1")
    stolen = page_csrf(other)  # signed by us, but for the other browser's nonce
    assert c.post(url, json={"event_id": event, "vote": "up"}, headers={"x-csrf-token": stolen}).status_code == 403
    assert c.post(url, json={"event_id": event, "vote": "up"},
                  headers={"x-csrf-token": page_csrf(c)}).status_code == 200
    # Logout without a token does not log out.
    assert c.post("/logout", data={}, follow_redirects=False).status_code == 403
    assert c.get("/api/live").status_code == 200


# --- scope -----------------------------------------------------------------------------------------
def _strip_tokens(html: str) -> str:
    return re.sub(r'(value|content)="[^"]*"', "", html)


def test_a_therapist_sees_only_their_sessions_and_others_look_missing(app, seeded):
    c = login(app, "therapist1")
    mine = c.get(f"/sessions/{seeded.live_with_homework}")
    assert mine.status_code == 200
    assert any(q in mine.text for q in seeded.quotes)
    other, missing = c.get(f"/sessions/{seeded.other_program}"), c.get("/sessions/no-such-session")
    assert other.status_code == missing.status_code == 404
    assert _strip_tokens(other.text) == _strip_tokens(missing.text).replace("no-such-session", seeded.other_program) \
        or _strip_tokens(other.text) == _strip_tokens(missing.text)
    assert seeded.other_program not in other.text
    for suffix in ("", "/stream"):
        a = c.get(f"/api/sessions/{seeded.other_program}{suffix}")
        b = c.get(f"/api/sessions/no-such-session{suffix}")
        assert a.status_code == b.status_code == 404 and a.content == b.content
    # Another therapist of the same program: also not visible to therapist1.
    assert c.get(f"/api/sessions/{seeded.ended_t08}").status_code == 404
    # A malformed id answers as a missing one (not a 422 that tells ids apart).
    assert c.get("/api/sessions/bad%20id!").status_code == 404


def test_a_supervisor_sees_their_program_only(app, seeded):
    c = login(app, "supervisor")
    for sid in (seeded.live_with_homework, seeded.ended_t08, seeded.ended_t01):
        assert c.get(f"/api/sessions/{sid}").status_code == 200
    assert c.get(f"/api/sessions/{seeded.other_program}").status_code == 404
    live = {r["session_id"] for r in c.get("/api/live").json()["sessions"]}
    assert live == {seeded.live_with_homework, seeded.live_no_homework}


def test_live_list_is_scoped_and_carries_no_text(app, seeded):
    t = login(app, "therapist2").get("/api/live").json()["sessions"]
    assert [r["session_id"] for r in t] == ["s-t02-live"]
    rows = login(app, "therapist1").get("/api/live").json()["sessions"]
    by_id = {r["session_id"]: r for r in rows}
    assert set(by_id) == {seeded.live_with_homework, seeded.live_no_homework}
    assert by_id[seeded.live_with_homework]["homework_so_far"] == 2
    assert by_id[seeded.live_no_homework]["nudges_sent"] == 1
    assert set(rows[0]) == {"session_id", "therapist_id", "program_id", "started_at", "homework_so_far",
                            "nudges_sent"}


# --- aggregates: figures right, never a quote ----------------------------------------------------
def test_fidelity_figures_per_therapist_and_program(app, seeded):
    c = login(app, "supervisor")
    fid = c.get("/api/fidelity", params={"window": "week"}).json()
    rows = {m["key"]: m for m in fid["therapists"]}
    assert set(rows) == {"t-01", "t-08"}  # no cbt-mood therapist
    # This week: t-01 ended s-ended-t01 (homework, reviewed its prior homework) and has two live ones;
    # t-08 ended two nudged sessions, one with homework after the nudge.
    assert (rows["t-01"]["sessions"], rows["t-01"]["completed"], rows["t-01"]["with_homework"]) == (3, 1, 1)
    assert (rows["t-01"]["prior_homework"], rows["t-01"]["prior_reviewed"]) == (1, 1)
    assert (rows["t-08"]["completed"], rows["t-08"]["with_homework"]) == (2, 1)
    assert (rows["t-08"]["nudged_no_homework"], rows["t-08"]["homework_after_nudge"]) == (2, 1)
    assert rows["t-08"]["follow_through_label"] == "50% (1/2)"
    assert [m["key"] for m in fid["programs"]] == ["cbt-anxiety"]
    assert fid["total"]["homework_rate_label"] == "67% (2/3)"
    month = c.get("/api/fidelity", params={"window": "month"}).json()
    assert month["total"]["completed"] > fid["total"]["completed"]
    trend = c.get("/api/fidelity/trend", params={"weeks": 8}).json()
    assert len(trend["weeks"]) == 8 and trend["series"][0]["overall"]
    assert {s["label"] for s in trend["series"][1:]} == {"t-01", "t-08"}


def test_a_therapist_fidelity_view_covers_only_them(app, seeded):
    fid = login(app, "therapist1").get("/api/fidelity", params={"window": "month"}).json()
    assert [m["key"] for m in fid["therapists"]] == ["t-01"]
    trend = login(app, "therapist1").get("/api/fidelity/trend").json()
    assert [s["label"] for s in trend["series"]] == ["my sessions"]


def test_no_quote_or_note_in_aggregate_views(app, seeded):
    c = login(app, "supervisor")
    pages = [c.get(p) for p in ("/fidelity", "/fidelity?window=month", "/sessions", "/api/live",
                                "/api/fidelity?window=month", "/api/fidelity/trend?weeks=12")]
    assert all(p.status_code == 200 for p in pages)
    text = "\n".join(p.text for p in pages)
    fragments = {q[:30] for q in seeded.quotes} | {"Homework assigned (", "into the session"}
    leaked = [f for f in fragments if f in text]
    assert leaked == []
    # ... while the session view does show them (the check above can fail).
    detail = c.get(f"/sessions/{seeded.ended_t01}").text
    assert "Homework assigned (" in detail and any(q[:30] in detail for q in seeded.quotes)


# --- audit ------------------------------------------------------------------------------------------
def test_every_view_of_session_detail_is_audited_without_text(app, store, seeded):
    c = login(app, "supervisor")
    sid = seeded.ended_t01
    c.get(f"/sessions/{sid}")
    c.get(f"/api/sessions/{sid}")
    with c.stream("GET", f"/api/sessions/{sid}/stream") as r:
        assert r.status_code == 200
        for _ in r.iter_lines():
            pass  # an ended session's stream sends what there is and ends
    c.get(f"/api/sessions/{seeded.other_program}")
    c.get("/fidelity")  # an aggregate view is not a session view: no record
    with store.session() as db:
        entries = audit_entries(db, user_id="supervisor")
    actions = sorted((e.action, e.session_id) for e in entries)
    assert actions == sorted([("login", None), ("view_session_page", sid), ("view_session_api", sid),
                              ("view_session_stream", sid), ("view_session_api_denied", seeded.other_program)])
    assert all(e.at.tzinfo is not None for e in entries)


# --- feedback ----------------------------------------------------------------------------------------
def test_feedback_is_stored_changed_and_withdrawn(app, store, seeded):
    c = login(app, "therapist1")
    sid = seeded.live_with_homework
    event = seeded.events[sid][1]
    url, headers = f"/api/sessions/{sid}/feedback", {"x-csrf-token": page_csrf(c)}
    r = c.post(url, json={"event_id": event, "vote": "down"}, headers=headers)
    assert r.status_code == 200 and r.json() == {"event_id": event, "vote": "down", "votes_up": 0, "votes_down": 1}
    detail = c.get(f"/api/sessions/{sid}").json()
    assert {e["event_id"]: e["my_vote"] for e in detail["events"]}[event] == "down"
    c.post(url, json={"event_id": event, "vote": "up"}, headers=headers)
    with store.session() as db:
        assert [(f.event_id, f.user_id, f.vote) for f in db.scalars(select(FeedbackRow))] == [(event, "therapist1", 1)]
    c.post(url, json={"event_id": event, "vote": None}, headers=headers)
    with store.session() as db:
        assert db.scalars(select(FeedbackRow)).all() == []
        assert [e.action for e in audit_entries(db, session_id=sid)].count("feedback") == 3
    # The panel shows the vote of this user only.
    c.post(url, json={"event_id": event, "vote": "up"}, headers=headers)
    sup = login(app, "supervisor").get(f"/api/sessions/{sid}").json()
    assert {e["event_id"]: (e["my_vote"], e["votes_up"]) for e in sup["events"]}[event] == (None, 1)


def test_feedback_outside_scope_or_session_is_refused_and_stores_nothing(app, store, seeded):
    c = login(app, "therapist1")
    headers = {"x-csrf-token": page_csrf(c)}
    foreign = seeded.events[seeded.other_program][0]
    mine = seeded.events[seeded.live_with_homework][0]
    for sid, event in ((seeded.other_program, foreign), (seeded.live_with_homework, foreign),
                       (seeded.live_no_homework, mine), ("no-such-session", mine)):
        r = c.post(f"/api/sessions/{sid}/feedback", json={"event_id": event, "vote": "up"}, headers=headers)
        assert r.status_code == 404 and r.json() == {"detail": "session not found"}
    assert c.post(f"/api/sessions/{seeded.live_with_homework}/feedback", json={"event_id": mine, "vote": "meh"},
                  headers=headers).status_code == 422
    with store.session() as db:
        assert db.scalars(select(FeedbackRow)).all() == []


# --- the live stream ----------------------------------------------------------------------------------
def _events(lines):
    """(event, data) pairs from an SSE line iterator."""
    kind = None
    for line in lines:
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind:
            yield kind, json.loads(line.split(":", 1)[1])
            kind = None


def test_the_stream_sends_what_arrives_then_the_summary(app, store, seeded):
    c = login(app, "therapist1")
    sid = seeded.live_with_homework
    with c.stream("GET", f"/api/sessions/{sid}/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
        first = [next(events) for _ in range(3)]
        assert sorted(k for k, _ in first) == ["detection", "detection", "nudge"]
        assert {d["event_id"] for k, d in first if k == "detection"} == set(seeded.events[sid])
        now = datetime.now(UTC).timestamp()
        new = HomeworkEvent(event_id=stable_id("event", sid, 80, MODEL), session_id=sid, therapist_id="t-01",
                            program_id="cbt-anxiety", client_id="c-203", turn=80, category="learn", confidence=0.8,
                            scores={"learn": 0.8}, quote="Have a look at the handout on worry time before Monday.",
                            start_s=1500.0, trigger_seq=81, emitted_at=now, model_version=MODEL)
        with store.session() as db:
            apply(db, new)
        kind, data = next(events)
        assert kind == "detection" and data["event_id"] == new.event_id and data["category"] == "learn"
        assert data["quote"] == new.quote and data["time_label"] == "25:00" and data["confidence_label"] == "80%"
        with store.session() as db:
            apply(db, SessionSummary(summary_id=stable_id("summary", sid, MODEL), session_id=sid, therapist_id="t-01",
                                     client_id="c-203", program_id="cbt-anxiety", homework_assigned=True,
                                     categories=["learn"], assignments=[], note="Homework assigned (Learn material).",
                                     n_utterances=10, n_microdialogues=5, emitted_at=now + 1, model_version=MODEL))
        kind, data = next(events)
        assert kind == "summary" and data["note"] == "Homework assigned (Learn material)."
        assert list(events) == []  # the stream ends after the summary


def test_the_stream_stops_when_the_login_ends(app, store, seeded):
    c = login(app, "therapist1")
    with c.stream("GET", f"/api/sessions/{seeded.live_no_homework}/stream") as r:
        events = _events(r.iter_lines())
        assert next(events)[0] == "nudge"
        with store.session() as db:
            db.query(LoginSessionRow).delete()
        assert next(events) == ("logged_out", {})


# --- headers and static files ------------------------------------------------------------------------
def test_responses_carry_security_headers_and_session_data_is_not_cached(app, seeded):
    c = login(app, "therapist1")
    for path in (f"/sessions/{seeded.live_with_homework}", f"/api/sessions/{seeded.live_with_homework}", "/login"):
        h = c.get(path).headers
        assert "default-src 'self'" in h["content-security-policy"] and "script-src 'self'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
        assert h["cache-control"] == "no-store"


def test_pages_load_scripts_only_from_the_app_and_the_chart_library_is_the_vendored_one(app, seeded):
    c = login(app, "supervisor")
    html = c.get("/fidelity").text
    srcs = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert srcs and all(s.startswith("/static/") for s in srcs)
    assert "<script>" not in html  # no inline script (the CSP forbids it)
    body = c.get("/static/vendor/chart.umd.js").content
    readme = (Path(__file__).resolve().parents[1] / "web/static/vendor/README.md").read_text()
    assert hashlib.sha256(body).hexdigest() in readme and "4.6.2" in readme
    assert body.startswith(b"/*!\n * Chart.js v4.6.2")
