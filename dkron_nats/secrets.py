"""Keeping secrets in executor and processor configs out of events, notifications and read-only views.

A config value is secret when its key looks secret (`is_secret_key`: password, token, key, auth...). Secrets
embedded under other keys are found too: the values of secret-named entries of the `http` executor's
`headers` (a JSON array of `"Name: value"`) and of the `shell` executor's `env` (`K1=v1,K2=v2`), and the
password and secret-named query parameters of any URL in a value. `masked` returns a copy of a config with
those parts as `***`; `secret_values` and `redact` cut the same secrets out of free text (an output, a
rendered notification).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"
SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "token",
    "secret",
    "key",
    "credential",
    "auth",
    "private",
    "cookie",
    "session",
    "signature",
    "jwt",
    "seed",
)
"""Words that make a key secret wherever they appear in it, in any case (`apiKey`, `DB_PASSWORD`)."""
_SECRET_KEY = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
MIN_REDACTED = 4
"""Secret values shorter than this are not cut out of free text: "1" or "yes" would shred any output."""


def is_secret_key(key: str) -> bool:
    """True if a config key (or a header, variable or query parameter name) looks like it holds a secret."""
    return _SECRET_KEY.search(key) is not None


# --------------------------------------------------------------------------- masking configs


def masked(config: Mapping[str, str] | None) -> dict[str, str] | None:
    """A copy of an executor or processor config with every secret part of its values as `***`."""
    if config is None:
        return None
    return {key: _masked_value(key, value) for key, value in config.items()}


def masked_processors(
    processors: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, dict[str, str]] | None:
    if processors is None:
        return None
    return {name: masked(config) or {} for name, config in processors.items()}


def mask_job_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it (render.job_json), with its executor and processor secrets masked.

    For events, and for users who may read jobs but not their secrets.
    """
    out = dict(job)
    if isinstance(out.get("executor_config"), dict):
        out["executor_config"] = masked(out["executor_config"])
    if isinstance(out.get("processors"), dict):
        out["processors"] = masked_processors(out["processors"])
    return out


def _masked_value(key: str, value: str) -> str:
    if not value:
        return value  # an unset secret reveals nothing, and showing it as unset helps the reader
    if is_secret_key(key):
        return MASK
    headers = _header_list(value) if key == "headers" else None
    if headers is not None:
        return json.dumps([_masked_pair(e, ":") if isinstance(e, str) else e for e in headers])
    if key == "env":
        return ",".join(_masked_pair(entry, "=") for entry in value.split(","))
    return _masked_urls(value)


def _header_list(value: str) -> list[object] | None:
    """The http executor's `headers`, a JSON array of `"Name: value"`, or None if it is not one."""
    try:
        entries = json.loads(value)
    except ValueError:
        return None
    return entries if isinstance(entries, list) else None


def _masked_pair(entry: str, separator: str) -> str:
    """`Name: value` (a header) or `NAME=value` (a variable), its value masked if the name is secret."""
    name, sep, _ = entry.partition(separator)
    if sep and is_secret_key(name):
        return f"{name}{separator}{' ' if separator == ':' else ''}{MASK}"
    return _masked_urls(entry)


# --------------------------------------------------------------------------- URLs in values


def _masked_urls(value: str) -> str:
    """`value` with the password and secret-named query parameters of every URL in it masked."""
    return _URL.sub(lambda match: _masked_url(match.group()), value)


def _masked_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    authority, path = _split_authority(rest)
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    head, question, query = path.partition("?")
    query, hash_, fragment = query.partition("#")
    if question:
        query = "&".join(_masked_param(part) for part in query.split("&"))
    return f"{scheme}://{authority}{head}{question}{query}{hash_}{fragment}"


def _split_authority(rest: str) -> tuple[str, str]:
    """(user:password@host:port, /path?query#fragment) of what follows a URL's `scheme://`."""
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], rest[index:]
    return rest, ""


def _masked_param(part: str) -> str:
    name, sep, value = part.partition("=")
    return f"{name}={MASK}" if sep and value and is_secret_key(unquote(name)) else part


def _url_secrets(value: str) -> list[str]:
    """The passwords and secret query values of the URLs in `value`, raw and percent-decoded."""
    found: list[str] = []
    for match in _URL.finditer(value):
        authority, path = _split_authority(match.group().partition("://")[2])
        userinfo, at, _ = authority.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        query = path.partition("?")[2].partition("#")[0]
        for part in query.split("&") if query else []:
            name, sep, raw = part.partition("=")
            if sep and is_secret_key(unquote(name)):
                found.append(raw)
    return [*found, *(unquote(v) for v in found)]


# --------------------------------------------------------------------------- secrets in free text


def secret_values(
    executor_config: Mapping[str, str] | None, processors: Mapping[str, Mapping[str, str]] | None = None
) -> frozenset[str]:
    """The secret parts of a job's configs, as they could show up in text (an output, a payload)."""
    found: set[str] = set()
    for config in [executor_config or {}, *(processors or {}).values()]:
        for key, value in config.items():
            found.update(_secrets_in(key, value))
    return frozenset(v for v in found if len(v) >= MIN_REDACTED)


def _secrets_in(key: str, value: str) -> list[str]:
    """What `_masked_value` hides of `value`."""
    if not value:
        return []
    if is_secret_key(key):
        return [value, value.strip()]
    headers = _header_list(value) if key == "headers" else None
    if headers is not None:
        return [s for entry in headers if isinstance(entry, str) for s in _pair_secrets(entry, ":")]
    if key == "env":
        return [s for entry in value.split(",") for s in _pair_secrets(entry, "=")]
    return _url_secrets(value)


def _pair_secrets(entry: str, separator: str) -> list[str]:
    name, sep, secret = entry.partition(separator)
    if sep and is_secret_key(name):
        return [secret, secret.strip()]
    return _url_secrets(entry)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret as `***` (longest first, so that none is left half)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text
