"""Names that become NATS subject tokens or KV keys, and the rules that keep them safe.

Job names follow Dkron (lower-case Unicode letters, digits, `_`, `-`). Node names and tag keys/values are
limited to `[A-Za-z0-9_-]` so that they can never form a wildcard or an extra subject token.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 200
_ASCII_JOB = re.compile(r"[a-z0-9_-]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def job_name_error(name: str) -> str | None:
    """Dkron's validation message for a job name, or None if it is valid."""
    if not name:
        return "name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"name is longer than {MAX_NAME_LENGTH} characters"
    for ch in name:
        if not ((ch.islower() and ch.isalpha()) or (ch.isdigit() and ch.isascii()) or ch in "_-"):
            return f"name contains illegal character '{ch}'"
    return None


def job_key(name: str) -> str:
    """One KV key token (and subject token) for a valid job name.

    Plain ASCII names are used as they are; others are hex-encoded behind `=`, which no job name contains.
    """
    if _ASCII_JOB.fullmatch(name):
        return name
    return "=" + name.encode().hex()


_JOB_KEY = re.compile(r"[a-z0-9_-]+|=(?:[0-9a-f]{2})+")


def is_job_key(text: str) -> bool:
    return len(text) <= 2 * 4 * MAX_NAME_LENGTH + 1 and _JOB_KEY.fullmatch(text) is not None


def job_name_from_key(key: str) -> str:
    if key.startswith("="):
        return bytes.fromhex(key[1:]).decode()
    return key


def is_token(text: str) -> bool:
    """True if `text` is safe as a single NATS subject token and KV key part."""
    return _TOKEN.fullmatch(text) is not None
