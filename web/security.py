"""Cookies, CSRF tokens and the response headers that keep session pages private.

* **Login**: the store makes a random 256-bit token and keeps only its SHA-256 (``store.access``); the
  browser gets the token in an HttpOnly, SameSite=Lax cookie (Secure with ``HWM_WEB_COOKIE_SECURE``).
* **CSRF**: signed double submit (itsdangerous). A random nonce lives in its own HttpOnly, SameSite=Strict
  cookie; pages carry ``sign(nonce)`` in a form field or a ``<meta>`` the scripts send back as
  ``X-CSRF-Token``. A POST passes only if the signature is ours, not older than the login lifetime, and
  its nonce equals the cookie's: another site can neither read the token nor forge one.
"""
from __future__ import annotations

import hmac
import math
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "hwm_session"
CSRF_COOKIE = "hwm_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


class CsrfSigner:
    def __init__(self, secret_key: str | bytes, max_age_s: float):
        self._serializer = URLSafeTimedSerializer(secret_key, salt="hwm-csrf")
        self.max_age_s = max(1, math.ceil(max_age_s))

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(16)

    def token_for(self, nonce: str) -> str:
        return self._serializer.dumps(nonce)

    def valid(self, token: str | None, cookie_nonce: str | None) -> bool:
        if not token or not cookie_nonce:
            return False
        try:
            nonce = self._serializer.loads(token, max_age=self.max_age_s)
        except BadSignature:  # includes SignatureExpired
            return False
        return isinstance(nonce, str) and hmac.compare_digest(nonce, cookie_nonce)


# Every response: scripts and styles only from this app (no inline script, no CDN), no framing, no
# referrer (a session page's URL names a session). Pages with session data are never cached.
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
NO_STORE = "no-store"
