"""API authentication: bearer tokens with a role, stored hashed in the `dkron-tokens` bucket.

A token is `dkn_` followed by 32 random URL-safe bytes. It is shown once, when created; the bucket keeps only
its SHA-256 with the token's name, role, who created it and when it expires (if it was given a lifetime).
Every server follows the bucket with a KV watch, so a revoked token stops working on every server within the
watch delay; an expired one is refused like an unknown one.

The bootstrap token (`DKRON_NATS_BOOTSTRAP_TOKEN`) lives in the environment, not in the bucket. Revoking it
stores a record named `bootstrap` that holds its hash in `revoked` (and an empty `sha256`, so that no server,
even one of an older version, takes the record for a token); a new value in the environment is a new token.

Roles nest: `read` may GET, `operator` may also run, toggle and cancel, `admin` may do everything. Which
route needs which role is decided in `dkron_nats/http/auth_api.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import msgspec

from dkron_nats.config import ConfigError
from dkron_nats.durations import parse_duration
from dkron_nats.errors import DkronError
from dkron_nats.kv.cache import KVCache
from dkron_nats.timefmt import rfc3339, utcnow

Role = Literal["read", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
"""From least to most allowed: each role may do everything the ones before it may."""
READ_METHODS = frozenset({"GET", "HEAD"})
TOKEN_PREFIX = "dkn_"  # noqa: S105 - the public prefix of every token, not a secret
BOOTSTRAP_ENV = "DKRON_NATS_BOOTSTRAP_TOKEN"
BOOTSTRAP_NAME = "bootstrap"
BOOTSTRAP_MIN_LENGTH = 32
MAX_TTL = timedelta(days=3650)
_TOKEN_NAME = re.compile(r"[a-z0-9_-]{1,64}")


class TokenInputError(DkronError):
    """A token request names no valid token name or role (400)."""


class TokenExistsError(DkronError):
    """A token with that name exists already (409)."""


class TokenNotFoundError(DkronError, LookupError):
    """No token has that name (404)."""


class StoredToken(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the bucket keeps about a token: never the token itself."""

    name: str
    role: Role
    sha256: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    """None: the token does not expire (and every record written before tokens could expire)."""
    revoked: str = ""
    """Only on the `bootstrap` record: the SHA-256 of the bootstrap token that was revoked."""

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who sent a request: the token's name and role."""

    name: str
    role: Role


ANONYMOUS = Principal(name="anonymous", role="admin")
"""Everyone, when authentication is off: every request may do everything (as in Dkron)."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # A token is 256 random bits, so nobody can guess it from its hash by trying candidates: a fast hash
    # is enough, and a slow password hash (bcrypt, scrypt) would only slow down every API request.
    return hashlib.sha256(token.encode()).hexdigest()


def bootstrap_token_from_env() -> str:
    """The bootstrap admin token, from the environment only: a flag or config key would show it in `ps`,
    shell history or `--print-config`."""
    return os.environ.get(BOOTSTRAP_ENV, "").strip()


def check_bootstrap_token(token: str) -> None:
    """A bootstrap token short enough to guess is refused at start-up (it is an admin token)."""
    if token and len(token) < BOOTSTRAP_MIN_LENGTH:
        raise ConfigError(
            f"{BOOTSTRAP_ENV} is too short ({len(token)} characters): an admin token must be at least "
            f"{BOOTSTRAP_MIN_LENGTH} random characters, e.g. `openssl rand -hex 24`"
        )


def parse_ttl(text: str) -> timedelta:
    """A token's lifetime: a Go duration (`720h`) or an ISO-8601 one (`P30D`), up to ten years."""
    try:
        ttl = parse_duration(text)
    except ValueError as exc:
        raise TokenInputError(f"Token validation failed: ttl: {exc}; use e.g. 24h, 720h or P90D.") from None
    if not timedelta(0) < ttl <= MAX_TTL:
        raise TokenInputError(
            f"Token validation failed: ttl {text!r} must be more than 0 and at most 10 years."
        )
    return ttl


def parse_role(text: str) -> Role | None:
    for role in ROLES:
        if text == role:
            return role
    return None


def allows(role: Role, needed: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def check_token_request(name: str, role: str) -> Role:
    """Validate `POST /v1/tokens` input; the error names the field and says what is allowed."""
    if not _TOKEN_NAME.fullmatch(name):
        raise TokenInputError(
            f"Token validation failed: name {name!r} must be 1 to 64 characters of a-z, 0-9, '_' and '-'."
        )
    if name == BOOTSTRAP_NAME:
        raise TokenInputError(
            f"Token validation failed: name {BOOTSTRAP_NAME!r} is reserved for {BOOTSTRAP_ENV}."
        )
    known = parse_role(role)
    if known is None:
        raise TokenInputError(
            f"Token validation failed: role must be one of {', '.join(ROLES)}, got {role!r}."
        )
    return known


def token_json(stored: StoredToken) -> dict[str, Any]:
    """A token as the API lists it: never the hash."""
    return {
        "name": stored.name,
        "role": stored.role,
        "created_at": stored.created_at.isoformat(),
        "created_by": stored.created_by,
        "expires_at": stored.expires_at.isoformat() if stored.expires_at else None,
    }


class Authenticator:
    """Checks bearer tokens against the token cache (and the bootstrap token) and manages tokens."""

    def __init__(self, tokens: KVCache[StoredToken], *, enabled: bool, bootstrap: str = "") -> None:
        self.tokens = tokens
        self.enabled = enabled
        self._bootstrap = bootstrap
        self._bootstrap_hash = token_hash(bootstrap) if bootstrap else ""

    def identify(self, authorization: str | None) -> Principal | str:
        """The principal of an `Authorization: Bearer <token>` header, or why it is refused (never quoting
        the token)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "not sent as 'Bearer <token>'"
        if self._bootstrap and hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            if self._bootstrap_revoked():
                return "the bootstrap token, which was revoked"
            return Principal(name=BOOTSTRAP_NAME, role="admin")
        digest = token_hash(token)
        for stored in self.tokens.values():
            if hmac.compare_digest(stored.sha256, digest):
                if stored.expired(utcnow()):
                    return f"token {stored.name!r}, which expired at {rfc3339(stored.expires_at)}"
                return Principal(name=stored.name, role=stored.role)
        return "an unknown or revoked token"

    def _bootstrap_revoked(self) -> bool:
        record = self.tokens.get(BOOTSTRAP_NAME)
        return record is not None and hmac.compare_digest(record.revoked, self._bootstrap_hash)

    def listed(self) -> list[StoredToken]:
        """The stored tokens, expired ones included (the record of a revoked bootstrap token is not one)."""
        found = (stored for stored in self.tokens.values() if not stored.revoked)
        return sorted(found, key=lambda stored: stored.name)

    def has_admin(self) -> bool:
        """Whether anyone can administer the API (a bootstrap token or a stored admin token)."""
        now = utcnow()
        if self._bootstrap and not self._bootstrap_revoked():
            return True
        return any(t.role == "admin" and t.sha256 and not t.expired(now) for t in self.tokens.values())

    async def create(
        self, name: str, role: Role, created_by: str, ttl: timedelta | None = None
    ) -> tuple[StoredToken, str]:
        """Store a new token; returns its record and the token itself (the only time it is known)."""
        token = new_token()
        now = utcnow()
        stored = StoredToken(
            name=name,
            role=role,
            sha256=token_hash(token),
            created_at=now,
            created_by=created_by,
            expires_at=now + ttl if ttl is not None else None,
        )
        revision = await self.tokens.store.create(name, stored)
        if revision is None:
            raise TokenExistsError(
                f"a token named {name!r} exists already: revoke it first or pick another name"
            )
        self.tokens.apply(name, stored, revision)
        return stored, token

    async def revoke(self, name: str, revoked_by: str) -> StoredToken:
        if name == BOOTSTRAP_NAME:
            return await self._revoke_bootstrap(revoked_by)
        stored = self.tokens.get(name)
        if stored is None:
            raise TokenNotFoundError(f"no token is named {name!r} (GET /v1/tokens lists them)")
        await self.tokens.store.delete(name)
        self.tokens.forget(name)  # this server refuses it at once; the others when their watch says so
        return stored

    async def _revoke_bootstrap(self, revoked_by: str) -> StoredToken:
        if not self._bootstrap or self._bootstrap_revoked():
            raise TokenNotFoundError(
                f"no bootstrap token is in use on this server ({BOOTSTRAP_ENV} is not set here, or its "
                "token was revoked already)"
            )
        now = utcnow()
        record = StoredToken(
            name=BOOTSTRAP_NAME,
            role="admin",
            sha256="",
            created_at=now,
            created_by=revoked_by,
            expires_at=now,
            revoked=self._bootstrap_hash,
        )
        revision = await self.tokens.store.put(BOOTSTRAP_NAME, record)
        self.tokens.apply(BOOTSTRAP_NAME, record, revision)
        return record
