"""Bearer tokens and roles. A token is configured by its SHA-256 only (`[[service.tokens]]`);
the caller's token name is the actor recorded in the ledger for what it does.

401 (problem+json) for a missing or unknown token, 403 for a known token without the role.
The dashboard's login form sets the same token in an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from .problems import Problem

COOKIE = "erasure_token"


@dataclass(frozen=True)
class Caller:
    name: str
    roles: frozenset[str]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def identify(config: Any, token: str | None) -> Caller | None:
    """The configured token `token` is, or None (compared in constant time)."""
    if not token:
        return None
    digest = token_sha256(token)
    found = None
    for t in config.service.tokens:
        if hmac.compare_digest(t.sha256, digest):
            found = Caller(t.name, frozenset(t.roles))
    return found


def bearer(headers: Any, cookies: Any = None) -> str | None:
    """The token of a request: `Authorization: Bearer <token>`, else the login cookie."""
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if cookies is not None:
        return cookies.get(COOKIE) or None
    return None


def require(config: Any, headers: Any, cookies: Any, *roles: str) -> Caller:
    """The caller, if it holds one of `roles`; Problem 401 or 403 otherwise."""
    caller = identify(config, bearer(headers, cookies))
    if caller is None:
        raise Problem(401, "Unauthorized", "a valid bearer token is required",
                      headers={"WWW-Authenticate": "Bearer"})
    if roles and not caller.roles & set(roles):
        raise Problem(403, "Forbidden", f"this needs the role {' or '.join(roles)}; the token "
                      f"{caller.name} has {', '.join(sorted(caller.roles))}")
    return caller
