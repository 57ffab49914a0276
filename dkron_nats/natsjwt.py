"""NATS decentralised-JWT credentials, derived from one cluster secret.

The embedded nats-server runs in operator mode: an operator signs two accounts, DKRON (all dkron data,
JetStream without limits) and SYS (the system account); DKRON signs one user JWT per client, carrying the
subjects its role may use (`dkron_nats/natsroles.py`). Every key comes from the cluster secret (a random
32-byte file, `<data-dir>/nats-secret` by default) through HMAC-SHA256, and the operator and account JWTs
carry a fixed issue time, so every server started with the same secret writes the same configuration and
accepts the same users. Whoever holds the secret can mint any credentials: keep it 0600 on servers only.

A JWT here is what nats-server expects (`nats-io/jwt` v2): base64url(header).base64url(claims).base64url(
ed25519 signature by the issuer's NKey), the claims' `jti` being a hash of the claims themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from dkron_nats.natsroles import Permissions

logger = logging.getLogger(__name__)
SECRET_BYTES = 32
SECRET_FILE_NAME = "nats-secret"  # noqa: S105 - a file name
"""The cluster secret's file in a server's data dir, when --nats-secret-file names no other."""
FIXED_IAT = 1_735_689_600
"""2025-01-01: the issue time of the operator and account JWTs, so the same secret gives the same JWTs."""
ACCOUNT_NAME = "DKRON"
_UNLIMITED_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True}


class SecretError(ValueError):
    """The cluster secret file is missing, unreadable or too short."""


def new_secret(path: Path) -> None:
    """Write a new random cluster secret to `path` (mode 0600); refuses to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(draft, path)  # whole or not at all; FileExistsError if there is one
    finally:
        draft.unlink()


def read_secret(path: Path) -> bytes:
    """The secret in `path`: at least 32 bytes of text (64 hex digits as `new_secret` writes them)."""
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        raise SecretError(f"{path}: no such file") from None
    except OSError as exc:
        raise SecretError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(text) < SECRET_BYTES:
        raise SecretError(f"{path}: too short for a cluster secret (at least {SECRET_BYTES} characters)")
    if path.stat().st_mode & 0o007:
        logger.warning("SECURITY: %s can be read by any user: make it private (chmod 600 %s)", path, path)
    return text


def ensure_secret(path: Path) -> bytes:
    """The secret in `path`, created first if the file does not exist."""
    if not path.exists():
        new_secret(path)
    return read_secret(path)


def _derived(secret: bytes, label: str) -> bytes:
    return hmac.new(secret, f"dkron-nats/{label}".encode(), hashlib.sha256).digest()


def _keypair(secret: bytes, label: str, prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(_derived(secret, label), prefix)))


@dataclass(frozen=True)
class ClusterKeys:
    """The keys every embedded server of one cluster shares, derived from the cluster secret."""

    operator: nkeys.KeyPair
    account: nkeys.KeyPair
    system: nkeys.KeyPair
    route_password: str

    def __repr__(self) -> str:  # never print a seed
        return f"ClusterKeys(account={self.account_id})"

    @classmethod
    def from_secret(cls, secret: bytes) -> ClusterKeys:
        return cls(
            operator=_keypair(secret, "operator", nkeys.PREFIX_BYTE_OPERATOR),
            account=_keypair(secret, "account", nkeys.PREFIX_BYTE_ACCOUNT),
            system=_keypair(secret, "system-account", nkeys.PREFIX_BYTE_ACCOUNT),
            route_password=_derived(secret, "route-password").hex(),
        )

    @property
    def account_id(self) -> str:
        """The public key of the account that holds the data (its JetStream directory's name)."""
        return _public(self.account)

    @property
    def system_id(self) -> str:
        return _public(self.system)


def _public(kp: nkeys.KeyPair) -> str:
    key: bytes = kp.public_key
    return key.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(signer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any], iat: int) -> str:
    """A JWT of `signer` about `subject` (nats-io/jwt v2 encoding)."""
    claims: dict[str, Any] = {"jti": "", "iat": iat, "iss": _public(signer), "name": name, "sub": subject}
    claims["nats"] = nats
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature: bytes = signer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


def operator_jwt(keys: ClusterKeys) -> str:
    nats = {"type": "operator", "version": 2, "system_account": keys.system_id}
    return _jwt(keys.operator, _public(keys.operator), "dkron", nats, FIXED_IAT)


def account_jwt(keys: ClusterKeys) -> str:
    """The data account: JetStream on, no limits; its users get only what their JWT allows."""
    nats = {
        "type": "account",
        "version": 2,
        "limits": {**_UNLIMITED, "conn": -1, "leaf": -1, **_UNLIMITED_JETSTREAM},
        "default_permissions": {"pub": {}, "sub": {}},
    }
    return _jwt(keys.operator, keys.account_id, ACCOUNT_NAME, nats, FIXED_IAT)


def system_account_jwt(keys: ClusterKeys) -> str:
    nats = {"type": "account", "version": 2, "limits": {**_UNLIMITED, "conn": -1, "leaf": -1}}
    return _jwt(keys.operator, keys.system_id, "SYS", nats, FIXED_IAT)


def user_jwt(keys: ClusterKeys, user_public: str, name: str, permissions: Permissions) -> str:
    """A user of the data account allowed only `permissions` (issued now, never expires)."""
    nats: dict[str, Any] = {
        "type": "user",
        "version": 2,
        "pub": {"allow": list(permissions.publish)},
        "sub": {"allow": list(permissions.subscribe)},
        "subs": -1,
        "data": -1,
        "payload": -1,
    }
    if permissions.responses:
        nats["resp"] = {"max": 1, "ttl": 0}
    return _jwt(keys.account, user_public, name, nats, int(time.time()))


def user_credentials(keys: ClusterKeys, name: str, permissions: Permissions) -> str:
    """A `.creds` text (user JWT and the new user's seed), as `nsc` writes it."""
    user = nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)))
    token = user_jwt(keys, _public(user), name, permissions)
    seed: bytes = user.seed
    return (
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
    )


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (also when the file existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def server_config_lines(keys: ClusterKeys) -> list[str]:
    """The operator-mode part of a nats-server config: the operator, both accounts, no lookups."""
    return [
        f"operator: {operator_jwt(keys)}",
        f"system_account: {keys.system_id}",
        "resolver: MEMORY",
        "resolver_preload: {",
        f"  {keys.account_id}: {account_jwt(keys)}",
        f"  {keys.system_id}: {system_account_jwt(keys)}",
        "}",
    ]
