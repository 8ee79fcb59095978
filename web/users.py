"""Who may log in, with which role and scope: a users file (YAML or JSON), or the demo users.

A user is the store's :class:`Viewer` (what every request is authorised and scoped with) plus a password
hash made by pwdlib (Argon2id) and a display name. ``homework-monitor web --hash-password`` prints a
hash for a users file.

Roles and what they see (docs/SURFACES.md), enforced by the store's scope (``store.access.scope``):

* ``therapist``: their own sessions only (``therapist_id``);
* ``supervisor``: every session of their program (``program_id``) and its fidelity figures.

An OIDC provider can replace the users file (``HWM_WEB_OIDC_ISSUER``): it authenticates the person and
:func:`viewer_from_claims` turns its ID-token claims into the same Viewer; the session cookie, scoping
and audit stay as they are.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from pwdlib import PasswordHash
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from homework_monitor.store.access import Role, Viewer
from homework_monitor.stream.schemas import ID_PATTERN

USERNAME_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"

# Argon2id with pwdlib's recommended parameters; verify() also accepts bcrypt hashes if pwdlib has them.
PASSWORDS = PasswordHash.recommended()


class UsersFileError(ValueError):
    """The users file cannot be used (its path and the reason, never a password or a hash)."""


class UserEntry(BaseModel):
    """One user of the users file."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(pattern=USERNAME_PATTERN)
    password_hash: str = Field(min_length=20)
    role: Role
    therapist_id: str | None = Field(None, pattern=ID_PATTERN, max_length=128)
    program_id: str | None = Field(None, pattern=ID_PATTERN, max_length=128)
    display_name: str | None = Field(None, max_length=80)

    @model_validator(mode="after")
    def _scope_fits_role(self) -> UserEntry:
        if self.role == "therapist" and not self.therapist_id:
            raise ValueError("a therapist needs therapist_id")
        if self.role == "supervisor" and not self.program_id:
            raise ValueError("a supervisor needs program_id")
        return self

    def viewer(self) -> Viewer:
        return Viewer(user_id=self.username, role=self.role, therapist_id=self.therapist_id,
                      program_id=self.program_id)


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[UserEntry] = Field(min_length=1)


class UserDirectory:
    """Users by name; checks passwords in constant work whether or not the user exists."""

    def __init__(self, users: Iterable[UserEntry], *, demo: bool = False):
        self.users: dict[str, UserEntry] = {}
        for u in users:
            if u.username in self.users:
                raise UsersFileError(f"user {u.username!r} appears twice")
            self.users[u.username] = u
        self.demo = demo
        # Verified against when the username is unknown, so a wrong name costs the same as a wrong
        # password and response times do not tell which names exist.
        self._dummy_hash = PASSWORDS.hash("not-a-password")

    def authenticate(self, username: str, password: str) -> Viewer | None:
        user = self.users.get(username)
        if user is None:
            PASSWORDS.verify(password, self._dummy_hash)
            return None
        try:
            ok = PASSWORDS.verify(password, user.password_hash)
        except Exception:  # an unreadable hash in the users file: the login fails, loudly in the log
            raise UsersFileError(f"user {username!r} has a password hash pwdlib cannot read") from None
        return user.viewer() if ok else None

    def current(self, viewer: Viewer) -> bool:
        """Whether a stored login still matches the configuration: a user removed from the users file,
        or given another role or scope, is logged out at their next request."""
        user = self.users.get(viewer.user_id)
        return user is not None and user.viewer() == viewer

    def label(self, viewer: Viewer) -> str:
        user = self.users.get(viewer.user_id)
        return (user.display_name if user else None) or viewer.user_id


def load_users_file(path: Path) -> UserDirectory:
    """Read a YAML or JSON users file (``{users: [...]}``); a clear error names the path and the field."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError):
        raise UsersFileError(f"users file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}") \
            from None
    try:
        parsed = UsersFile.model_validate(data)
    except ValidationError as exc:
        # Field locations and pydantic's messages only (they never quote the input: it may be a hash).
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise UsersFileError(f"users file {path} is invalid: {where}") from None
    return UserDirectory(parsed.users)


# The demo users: the therapists and the supervisor of the demo sessions (producers/demo_sessions), one
# password for all. Only on a loopback address (see :func:`user_directory`); documented in SURFACES.md.
DEMO_PASSWORD = "homework-demo"
DEMO_USERS: tuple[dict, ...] = (
    {"username": "therapist1", "role": "therapist", "therapist_id": "t-01", "program_id": "cbt-anxiety",
     "display_name": "Therapist t-01"},
    {"username": "therapist8", "role": "therapist", "therapist_id": "t-08", "program_id": "cbt-anxiety",
     "display_name": "Therapist t-08"},
    {"username": "therapist2", "role": "therapist", "therapist_id": "t-02", "program_id": "cbt-mood",
     "display_name": "Therapist t-02"},
    # The follow-up pairs (a client's two consecutive sessions): their panels show the nudges.
    {"username": "therapist11", "role": "therapist", "therapist_id": "t-11", "program_id": "cbt-anxiety",
     "display_name": "Therapist t-11"},
    {"username": "therapist10", "role": "therapist", "therapist_id": "t-10", "program_id": "cbt-mood",
     "display_name": "Therapist t-10"},
    {"username": "supervisor", "role": "supervisor", "program_id": "cbt-anxiety",
     "display_name": "Supervisor, CBT anxiety"},
    {"username": "supervisor-mood", "role": "supervisor", "program_id": "cbt-mood",
     "display_name": "Supervisor, CBT mood"},
)


def demo_directory() -> UserDirectory:
    """The demo users, hashed at start with the same library as a users file."""
    return UserDirectory([UserEntry(password_hash=PASSWORDS.hash(DEMO_PASSWORD), **u) for u in DEMO_USERS],
                         demo=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def user_directory(users_file: Path | None, oidc_issuer: str | None, host: str) -> UserDirectory:
    """The configured users. The demo users (one well-known password) only serve a loopback address:
    an app reachable from other machines needs a users file or OIDC."""
    if oidc_issuer:
        # The seam is viewer_from_claims(); the authorization-code flow itself needs a client
        # registration and a library (authlib) that this build does not include. Refuse rather than
        # silently fall back to the demo users.
        raise UsersFileError("HWM_WEB_OIDC_ISSUER is set, but this build has no OIDC login flow; "
                             "see docs/SURFACES.md (OIDC) for what plugs in, or unset it and use a users file")
    if users_file is not None:
        return load_users_file(users_file)
    if not is_loopback(host):
        raise UsersFileError(f"HWM_WEB_HOST={host} is not loopback: set HWM_WEB_USERS_FILE "
                             "(the demo users are for a loopback address only)")
    return demo_directory()


def viewer_from_claims(claims: Mapping[str, object], *, role_claim: str = "hwm_role",
                       therapist_claim: str = "hwm_therapist_id", program_claim: str = "hwm_program_id") -> Viewer:
    """An OIDC ID token's claims as a Viewer (the OIDC seam; unit-tested). The identity provider asserts
    the role and the scope; a token without a valid role or the id its role needs is refused."""
    username = str(claims.get("preferred_username") or claims.get("sub") or "")
    entry = UserEntry(username=username, password_hash="(oidc: no password here)", role=claims.get(role_claim),
                      therapist_id=claims.get(therapist_claim), program_id=claims.get(program_claim),
                      display_name=claims.get("name"))
    return entry.viewer()
