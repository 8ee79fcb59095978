"""``homework-monitor web``: the web app over the configured store, served by uvicorn.

Binds ``HWM_WEB_HOST:HWM_WEB_PORT`` (loopback by default). Users come from ``HWM_WEB_USERS_FILE``; without
one the demo users serve a loopback address only (``users.user_directory``).
"""
from __future__ import annotations

import getpass
import logging
import sys

import uvicorn
from fastapi import FastAPI

from homework_monitor.store.access import purge_expired_logins
from homework_monitor.store.db import Store, safe_url, store_url
from homework_monitor.stream.config import Settings

from .app import create_app
from .users import DEMO_PASSWORD, PASSWORDS, user_directory

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> FastAPI:
    users = user_directory(settings.web.users_file, settings.web.oidc_issuer, settings.web.host)
    store = Store.open(settings)  # migrates the schema first if this process is the first to start
    with store.session() as db:
        purge_expired_logins(db)
    log.info("web app over store %s; %d users (%s)", safe_url(store_url(settings)), len(users.users),
             "demo users" if users.demo else str(settings.web.users_file))
    return create_app(settings, store, users)


def login_hint(settings: Settings, demo: bool) -> str:
    url = f"http://{settings.web.host}:{settings.web.port}/"
    if not demo:
        return f"web app: {url} (users from {settings.web.users_file})"
    return (f"web app: {url}  demo login: therapist1 / {DEMO_PASSWORD} (therapist t-01), "
            f"supervisor / {DEMO_PASSWORD} (program cbt-anxiety)")


def serve(settings: Settings) -> None:
    app = build_app(settings)
    print(login_hint(settings, app.state.users.demo), flush=True)
    # Access log lines carry method, path (session ids at most: never text) and status.
    uvicorn.run(app, host=settings.web.host, port=settings.web.port, log_level="info", proxy_headers=False,
                server_header=False)


def hash_password() -> int:
    """Print an Argon2id hash (pwdlib) of a password read without echo, for a users file."""
    first = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty() and getpass.getpass("again: ") != first:
        print("passwords differ", file=sys.stderr)
        return 2
    if len(first) < 8:
        print("a password needs at least 8 characters", file=sys.stderr)
        return 2
    print(PASSWORDS.hash(first))
    return 0
