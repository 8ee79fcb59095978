"""Users and roles from config: the users file (YAML/JSON, pwdlib Argon2 hashes), the demo users, the
OIDC seam, and `homework-monitor web --hash-password`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from homework_monitor.store.access import Viewer
from homework_monitor.web.users import (
    DEMO_PASSWORD,
    PASSWORDS,
    UsersFileError,
    load_users_file,
    user_directory,
    viewer_from_claims,
)


@pytest.fixture(scope="module")
def hashed() -> str:
    return PASSWORDS.hash("correct horse battery")


def test_a_yaml_users_file_gives_roles_and_scopes(tmp_path, hashed):
    path = tmp_path / "users.yaml"
    path.write_text(f"""
users:
  - username: rivera
    password_hash: "{hashed}"
    role: therapist
    therapist_id: t-01
    display_name: Dr Rivera
  - username: chen
    password_hash: "{hashed}"
    role: supervisor
    program_id: cbt-anxiety
""")
    users = load_users_file(path)
    assert not users.demo
    assert users.authenticate("rivera", "correct horse battery") == Viewer("rivera", "therapist", "t-01", None)
    assert users.authenticate("chen", "correct horse battery") == Viewer("chen", "supervisor", None, "cbt-anxiety")
    assert users.authenticate("rivera", "wrong") is None
    assert users.authenticate("nobody", "correct horse battery") is None
    assert users.label(Viewer("rivera", "therapist", "t-01")) == "Dr Rivera"
    assert hashed.startswith("$argon2id$")


def test_a_json_users_file_works_too(tmp_path, hashed):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": [{"username": "lee", "password_hash": hashed, "role": "therapist",
                                           "therapist_id": "t-07"}]}))
    assert load_users_file(path).authenticate("lee", "correct horse battery").therapist_id == "t-07"


@pytest.mark.parametrize("users, message", [
    ([{"username": "x", "role": "therapist"}], "password_hash"),
    ([{"username": "x", "password_hash": "H", "role": "therapist"}], "therapist_id"),
    ([{"username": "x", "password_hash": "H", "role": "supervisor"}], "program_id"),
    ([{"username": "x", "password_hash": "H", "role": "admin", "therapist_id": "t"}], "role"),
    ([{"username": "bad name!", "password_hash": "H", "role": "therapist", "therapist_id": "t"}], "username"),
    ([], "users"),
])
def test_an_invalid_users_file_names_the_field_and_never_the_hash(tmp_path, hashed, users, message):
    path = tmp_path / "users.json"
    users = [{k: (hashed if v == "H" else v) for k, v in u.items()} for u in users]
    path.write_text(json.dumps({"users": users}))
    with pytest.raises(UsersFileError) as err:
        load_users_file(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert hashed not in str(err.value)


def test_duplicate_users_unreadable_files_and_bad_syntax_are_refused(tmp_path, hashed):
    dup = tmp_path / "dup.json"
    entry = {"username": "a", "password_hash": hashed, "role": "therapist", "therapist_id": "t"}
    dup.write_text(json.dumps({"users": [entry, entry]}))
    with pytest.raises(UsersFileError, match="twice"):
        load_users_file(dup)
    with pytest.raises(UsersFileError, match="cannot read"):
        load_users_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("users: [unclosed")
    with pytest.raises(UsersFileError, match="not valid YAML"):
        load_users_file(bad)


def test_an_unreadable_hash_fails_the_login_loudly(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": [{"username": "a", "password_hash": "not-a-real-hash-at-all-x",
                                           "role": "therapist", "therapist_id": "t"}]}))
    with pytest.raises(UsersFileError, match="cannot read"):
        load_users_file(path).authenticate("a", "whatever")


def test_demo_users_only_on_loopback_and_oidc_is_refused_until_wired(tmp_path):
    demo = user_directory(None, None, "127.0.0.1")
    assert demo.demo and demo.authenticate("supervisor", DEMO_PASSWORD).program_id == "cbt-anxiety"
    assert user_directory(None, None, "localhost").demo
    for host in ("0.0.0.0", "10.1.2.3", "example.org"):
        with pytest.raises(UsersFileError, match="HWM_WEB_USERS_FILE"):
            user_directory(None, None, host)
    with pytest.raises(UsersFileError, match="OIDC"):
        user_directory(None, "https://login.example.org/realms/clinic", "127.0.0.1")


def test_oidc_claims_map_to_a_viewer_and_bad_claims_are_refused():
    v = viewer_from_claims({"sub": "abc", "preferred_username": "rivera", "hwm_role": "therapist",
                            "hwm_therapist_id": "t-01", "name": "Dr Rivera"})
    assert v == Viewer("rivera", "therapist", "t-01", None)
    for claims in ({"sub": "a", "hwm_role": "therapist"}, {"sub": "a", "hwm_role": "root", "hwm_program_id": "p"},
                   {"sub": "a", "hwm_role": "supervisor"}, {"hwm_role": "supervisor", "hwm_program_id": "p"}):
        with pytest.raises(ValueError):
            viewer_from_claims(claims)


def test_hash_password_command_prints_a_hash_that_verifies():
    res = subprocess.run([sys.executable, "-m", "homework_monitor.cli", "web", "--hash-password"],
                         input="a long enough password\n", capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip()
    assert digest.startswith("$argon2id$") and "a long enough password" not in res.stdout
    assert PASSWORDS.verify("a long enough password", digest)
    short = subprocess.run([sys.executable, "-m", "homework_monitor.cli", "web", "--hash-password"],
                           input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "8 characters" in short.stderr
