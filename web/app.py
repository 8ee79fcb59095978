"""The clinicians' web app: therapist session panel, supervisor fidelity view, login, audit.

``create_app(settings, store, users)`` builds a FastAPI app over the store (``homework_monitor.store``),
which the sink fills from Kafka. Pages are Jinja2 templates; a live session page follows the store over
server-sent events (sse-starlette) that look for new detections, nudges and the summary every
``HWM_WEB_POLL_INTERVAL_S``.

Access rules (docs/SURFACES.md):

* without a valid login, pages redirect to ``/login`` and ``/api/*`` answers 401, before anything is
  read: no counts, no ids, no hint whether a session exists;
* a session outside the viewer's scope answers exactly like one that does not exist (404, same body);
* every view of a session's detail (page, JSON, event stream) and every vote is written to the audit log
  (user, action, session id, time; no text);
* every POST carries a CSRF token (signed double submit, ``security``);
* quotes and charting notes appear only in session views; aggregate pages, URLs and logs carry ids,
  counts and rates only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homework_monitor.store.access import Viewer, audit, create_login, expire_login, lookup_login
from homework_monitor.store.db import Store
from homework_monitor.stream.config import Settings
from homework_monitor.stream.schemas import ID_PATTERN

from . import data
from .security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    NO_STORE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    CsrfSigner,
)
from .users import DEMO_PASSWORD, UserDirectory

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_ID = re.compile(ID_PATTERN)

# Audit actions (closed names from code, never request text).
VIEW_PAGE, VIEW_API, VIEW_STREAM = "view_session_page", "view_session_api", "view_session_stream"
FEEDBACK, LOGIN, LOGOUT = "feedback", "login", "logout"


class LoginRequired(Exception):
    """No valid login: pages redirect to the login form, the API answers 401."""


class Feedback(BaseModel):
    """A thumbs up/down on a detection; None withdraws the viewer's vote."""
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    vote: Literal["up", "down"] | None


class SecurityHeaders:
    """Adds the security headers to every response, and ``no-store`` to everything but static files
    (pages and API answers can carry session data). Pure ASGI, so event streams pass untouched."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = dict(SECURITY_HEADERS)
                if not static:
                    extra["cache-control"] = NO_STORE
                headers += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _safe_next(path: str | None) -> str:
    """Only a local path is a place to go after login (no open redirect)."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def create_app(settings: Settings, store: Store, users: UserDirectory) -> FastAPI:
    web = settings.web
    ttl = timedelta(minutes=web.session_ttl_minutes)
    secret = web.secret_key.get_secret_value() if web.secret_key else secrets.token_hex(32)
    csrf = CsrfSigner(secret, max_age_s=ttl.total_seconds())
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(title="homework-monitor web", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.store, app.state.users = store, users

    # --- helpers ------------------------------------------------------------------------------
    def current_viewer(request: Request) -> Viewer | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        with store.session() as db:
            viewer = lookup_login(db, token)
        if viewer is None or not users.current(viewer):
            return None
        return viewer

    def require_viewer(request: Request) -> Viewer:
        viewer = current_viewer(request)
        if viewer is None:
            raise LoginRequired()
        return viewer

    def csrf_nonce(request: Request) -> tuple[str, bool]:
        nonce = request.cookies.get(CSRF_COOKIE)
        return (nonce, False) if nonce else (csrf.new_nonce(), True)

    def set_csrf_cookie(response: Response, nonce: str) -> None:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", secure=web.cookie_secure,
                            path="/")

    def render(request: Request, template: str, viewer: Viewer | None, status_code: int = 200,
               **context) -> HTMLResponse:
        nonce, fresh = csrf_nonce(request)
        user = None if viewer is None else {"label": users.label(viewer), "role": viewer.role,
                                            "program_id": viewer.program_id}
        response = templates.TemplateResponse(request, template, {"user": user, "csrf_token": csrf.token_for(nonce),
                                                                  **context}, status_code=status_code)
        if fresh:
            set_csrf_cookie(response, nonce)
        return response

    def check_csrf(request: Request, token: str | None) -> None:
        if not csrf.valid(token, request.cookies.get(CSRF_COOKIE)):
            raise HTTPException(403, "CSRF token missing or invalid: reload the page")

    def visible_session_id(session_id: str) -> str:
        # A malformed id answers as a missing session does (not 422): nothing to tell apart.
        if not SESSION_ID.match(session_id) or len(session_id) > 128:
            raise HTTPException(404, "session not found")
        return session_id

    def load_session(viewer: Viewer, session_id: str, action: str) -> dict:
        """The session's view for ``viewer``, with one audit record; 404 whether it is missing or out of
        scope (the denied attempt is audited too)."""
        session_id = visible_session_id(session_id)
        with store.session() as db:
            view = data.session_view(db, viewer, session_id, audit_action=action)
            if view is None:
                audit(db, viewer.user_id, f"{action}_denied", session_id)
        if view is None:
            raise HTTPException(404, "session not found")
        return view

    # --- errors -------------------------------------------------------------------------------
    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "login required"}, status_code=401,
                                headers={"www-authenticate": 'Cookie realm="homework-monitor"'})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        titles = {404: "Not found", 403: "Not allowed"}
        return render(request, "error.html", current_viewer(request), status_code=exc.status_code,
                      title=titles.get(exc.status_code, "Error"), message=str(exc.detail))

    # --- login --------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str | None = None):
        return render(request, "login.html", None, next_path=_safe_next(next), demo=users.demo,
                      demo_password=DEMO_PASSWORD, error=None)

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        next_path = _safe_next(str(form.get("next") or "/"))
        if not csrf.valid(str(form.get(CSRF_FIELD) or ""), request.cookies.get(CSRF_COOKIE)):
            # A stale form (opened before a restart, or long ago): a fresh one, the password not checked.
            return render(request, "login.html", None, status_code=403, next_path=next_path, demo=users.demo,
                          demo_password=DEMO_PASSWORD, error="The login form had expired: please log in again.")
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        viewer = await run_in_threadpool(users.authenticate, username[:64], password[:1024])
        if viewer is None:
            return render(request, "login.html", None, status_code=401, next_path=next_path, demo=users.demo,
                          demo_password=DEMO_PASSWORD, error="Wrong user name or password.")

        def start_login() -> str:
            with store.session() as db:
                token = create_login(db, viewer, ttl)
                audit(db, viewer.user_id, LOGIN)
            return token
        token = await run_in_threadpool(start_login)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=math.ceil(ttl.total_seconds()), httponly=True,
                            samesite="lax", secure=web.cookie_secure, path="/")
        set_csrf_cookie(response, csrf.new_nonce())  # a fresh CSRF nonce per login
        return response

    @app.post("/logout")
    async def logout(request: Request):
        form = await request.form()
        check_csrf(request, str(form.get(CSRF_FIELD) or ""))
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            def end_login() -> None:
                with store.session() as db:
                    viewer = lookup_login(db, token)
                    if expire_login(db, token) and viewer is not None:
                        audit(db, viewer.user_id, LOGOUT)
            await run_in_threadpool(end_login)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- pages --------------------------------------------------------------------------------
    @app.get("/")
    def home(request: Request):
        viewer = require_viewer(request)
        return RedirectResponse("/sessions" if viewer.role == "therapist" else "/fidelity", status_code=303)

    @app.get("/sessions", response_class=HTMLResponse)
    def sessions_page(request: Request):
        viewer = require_viewer(request)
        with store.session() as db:
            live = data.live_rows(db, viewer)
            recent = data.recent_rows(db, viewer)
        return render(request, "sessions.html", viewer, live=live, recent=recent)

    @app.get("/sessions/{session_id}", response_class=HTMLResponse)
    def session_page(request: Request, session_id: str):
        viewer = require_viewer(request)
        return render(request, "session.html", viewer, s=load_session(viewer, session_id, VIEW_PAGE))

    @app.get("/fidelity", response_class=HTMLResponse)
    def fidelity_page(request: Request, window: Literal["week", "month"] = "week", ending: date | None = None,
                      program: str | None = None):
        viewer = require_viewer(request)
        with store.session() as db:
            fid = data.fidelity_view(db, viewer, window, ending, program or None)
            live = data.live_rows(db, viewer)
            programs = data.programs(db, viewer)
        return render(request, "fidelity.html", viewer, fid=fid, live=live, programs=programs)

    # --- API ----------------------------------------------------------------------------------
    @app.get("/api/me")
    def me(request: Request):
        viewer = require_viewer(request)
        return {"user_id": viewer.user_id, "role": viewer.role, "therapist_id": viewer.therapist_id,
                "program_id": viewer.program_id}

    @app.get("/api/live")
    def live_api(request: Request):
        viewer = require_viewer(request)
        with store.session() as db:
            rows = data.live_rows(db, viewer)
        return {"sessions": [{k: r[k] for k in ("session_id", "therapist_id", "program_id", "started_at",
                                                "homework_so_far", "nudges_sent")} for r in rows]}

    @app.get("/api/fidelity")
    def fidelity_api(request: Request, window: Literal["week", "month"] = "week", ending: date | None = None,
                     program: str | None = None):
        viewer = require_viewer(request)
        with store.session() as db:
            return data.fidelity_view(db, viewer, window, ending, program or None)

    @app.get("/api/fidelity/trend")
    def trend_api(request: Request, weeks: int = Query(8, ge=1, le=52), ending: date | None = None,
                  program: str | None = None):
        viewer = require_viewer(request)
        with store.session() as db:
            return data.trend_chart(db, viewer, weeks, ending, program or None)

    @app.get("/api/sessions/{session_id}")
    def session_api(request: Request, session_id: str):
        viewer = require_viewer(request)
        return load_session(viewer, session_id, VIEW_API)

    @app.post("/api/sessions/{session_id}/feedback")
    def feedback_api(request: Request, session_id: str, body: Feedback):
        viewer = require_viewer(request)
        check_csrf(request, request.headers.get(CSRF_HEADER))
        session_id = visible_session_id(session_id)
        with store.session() as db:
            tally = data.set_vote(db, viewer, session_id, body.event_id, body.vote)  # audited by the store
            if tally is None:
                audit(db, viewer.user_id, f"{FEEDBACK}_denied", session_id)
        if tally is None:
            raise HTTPException(404, "session not found")
        return tally

    @app.get("/api/sessions/{session_id}/stream")
    async def session_stream(request: Request, session_id: str):
        token = request.cookies.get(SESSION_COOKIE)
        viewer = await run_in_threadpool(require_viewer, request)
        first = await run_in_threadpool(load_session, viewer, session_id, VIEW_STREAM)
        return EventSourceResponse(_follow(request, viewer, token, first), ping=15,
                                   headers={"cache-control": NO_STORE, "x-accel-buffering": "no"})

    async def _follow(request: Request, viewer: Viewer, token: str | None, view: dict) -> AsyncIterator[dict]:
        """What the page has not shown yet: every detection and nudge once, then the summary; ends
        when the session has ended, the client leaves, or the login stops being valid."""
        sent: set[str] = set()
        session_id = view["session_id"]
        while True:
            for kind, items, key in (("detection", view["events"], "event_id"),
                                     ("nudge", view["nudges"], "nudge_id")):
                for item in items:
                    if item[key] not in sent:
                        sent.add(item[key])
                        yield {"event": kind, "id": item[key], "data": json.dumps(item)}
            if view["ended"]:
                summary = {k: view[k] for k in ("note", "followup_label", "homework_assigned", "elapsed_label")}
                yield {"event": "summary", "data": json.dumps(summary)}
                return
            await asyncio.sleep(web.poll_interval_s)
            if await request.is_disconnected():
                return

            def refresh() -> dict | None:
                with store.session() as db:
                    still = lookup_login(db, token or "")
                    if still is None or not users.current(still):
                        return None
                    return data.session_view(db, viewer, session_id, audit_action=None)
            fresh = await run_in_threadpool(refresh)
            if fresh is None:  # logged out, expired, or the session left the viewer's scope
                yield {"event": "logged_out", "data": "{}"}
                return
            view = fresh

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app
