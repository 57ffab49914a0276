"""Keeping secrets out of events, notifications, read-only views, outputs and logs.

A config value is secret when its key looks secret (`is_secret_key`: password, token, key, auth...). Secrets
embedded under other keys are found too: the values of secret-named entries of the `http` executor's
`headers` (a JSON array of `"Name: value"`) and of the `shell` executor's `env` (`K1=v1,K2=v2`), and in any
free text (`secret_spans`): the password and secret-named query parameters of a URL, a bearer token, a
secret-named `name=value` pair or `"name": value` JSON field. `masked` returns a copy of a config with those
parts as `***`; `secret_values`/`job_secrets` and `redact`/`StreamRedactor` cut the same secrets out of text
(an output, a rendered notification); `mask_text` cuts what it can recognise out of any text (a log line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from dkron_nats.models import JobSpec

MASK = "***"
_MASK_BYTES = MASK.encode()
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
_SECRET_NAME_END = re.compile(f"(?:{'|'.join(SECRET_WORDS)})s?_?\\d*$", re.IGNORECASE)
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s'\"<>]+")
"""A URL. Its scheme starts after a separator and is short: otherwise `a-a-a-...` takes quadratic time."""
_BEARER = re.compile(r"\b(?:bearer\s+|authorization:\s*basic\s+)([A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE)
"""A bearer token (8 characters at least: "the bearer of" is prose) or the credentials of Basic auth."""
_PAIR = re.compile(r"(?<![\w.-])-{0,2}([A-Za-z_][\w.-]{0,100})=(?:\"([^\"]*)\"|'([^']*)'|([^\s&;,'\"]+))")
"""`name=value`, `--name="value"` or `name='value'` (a variable, an option, a query parameter). Names start
only after a separator, so a long run of name characters costs linear time, not quadratic."""
_JSON_FIELD = re.compile(r'"([^"\\]{1,100})"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(-?\d[\w.+-]*))')
"""A JSON field with a string or number value, in any text (an http body, a `curl -d` in a command)."""
MIN_REDACTED = 4
"""Secret values shorter than this are not cut out of free text: "1" or "yes" would shred any output."""


def is_secret_key(key: str) -> bool:
    """True if a config key (or a header, variable or query parameter name) looks like it holds a secret."""
    return _SECRET_KEY.search(key) is not None


def _is_secret_name_in_text(name: str) -> bool:
    """Stricter than `is_secret_key`, for names found in free text (`--tokenizer=bert` and
    `StrictHostKeyChecking=no` are not secrets): it ends with a secret word (`DB_PASSWORD`, `apiKey`)."""
    return _SECRET_NAME_END.search(name) is not None


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
    return mask_text(value)


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
    return mask_text(entry)


# --------------------------------------------------------------------------- secrets recognised in any text

Span = tuple[int, int]


def mask_text(text: str) -> str:
    """`text` with every secret it shows by its form (see `secret_spans`) as `***`."""
    parts: list[str] = []
    last = 0
    for start, end in secret_spans(text):
        parts += [text[last:start], MASK]
        last = end
    return "".join(parts) + text[last:] if parts else text


def secret_spans(text: str) -> list[Span]:
    """(start, end) of each secret in `text` that its form gives away, in order and not overlapping: a URL's
    password and secret-named query values, a bearer token, a secret-named `name=value` or JSON field."""
    urls = [match.span() for match in _URL.finditer(text)]
    found = [
        *(span for start, end in urls for span in _url_spans(text[start:end], start)),
        *(match.span(1) for match in _BEARER.finditer(text)),
        *_pair_spans(text, urls),
        *_json_field_spans(text),
    ]
    return _merged(found)


def _url_spans(url: str, offset: int) -> list[Span]:
    """The password and secret-named query values of one URL, as spans of the text it is at `offset` in."""
    found: list[Span] = []
    at = offset + url.index("://") + 3
    authority, path = _split_authority(url[at - offset :])
    userinfo, sign, _ = authority.rpartition("@")
    if sign and ":" in userinfo and not userinfo.endswith(":"):
        found.append((at + userinfo.index(":") + 1, at + len(userinfo)))
    question = path.find("?")
    if question < 0:
        return found
    position = at + len(authority) + question + 1
    for part in path[question + 1 :].partition("#")[0].split("&"):
        name, sep, value = part.partition("=")
        if sep and value and is_secret_key(unquote(name)):
            found.append((position + len(name) + 1, position + len(part)))
        position += len(part) + 1
    return found


def _split_authority(rest: str) -> tuple[str, str]:
    """(user:password@host:port, /path?query#fragment) of what follows a URL's `scheme://`."""
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], rest[index:]
    return rest, ""


def _pair_spans(text: str, urls: list[Span]) -> list[Span]:
    """The values of secret-named `name=value` pairs outside URLs (their query is `_url_spans`' business)."""
    found: list[Span] = []
    for match in _PAIR.finditer(text):
        if not _is_secret_name_in_text(match.group(1)) or any(s <= match.start() < e for s, e in urls):
            continue
        group = next(g for g in (2, 3, 4) if match.group(g) is not None)
        value = match.group(group)
        if value and not value.startswith("$"):  # `PGPASSWORD=$PW` names the secret, it does not show it
            found.append(match.span(group))
    return found


def _json_field_spans(text: str) -> list[Span]:
    found: list[Span] = []
    for match in _JSON_FIELD.finditer(text):
        group = 2 if match.group(2) is not None else 3
        if match.group(group) and _is_secret_name_in_text(match.group(1)):
            found.append(match.span(group))
    return found


def _merged(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _text_secrets(text: str) -> list[str]:
    """What `mask_text` hides of `text`, raw and as it may be decoded (percent- or JSON-escaped)."""
    found = [text[start:end] for start, end in secret_spans(text)]
    return [*found, *(unquote(v) for v in found), *(_json_unescaped(v) for v in found if "\\" in v)]


def _json_unescaped(value: str) -> str:
    try:
        decoded = json.loads(f'"{value}"')
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


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


def job_secrets(job: JobSpec, env: Mapping[str, str] | None = None) -> frozenset[str]:
    """What one run of `job` must never show: its configs' secrets (`secret_values`), and of the run's extra
    environment the values of the parameters the job marks secret and of secret-named variables."""
    found = set(secret_values(job.executor_config, job.processors))
    hidden = set(secret_parameters(job))
    for name, value in (env or {}).items():
        if name in hidden or is_secret_key(name):
            found.update((value, value.strip()))
    return frozenset(v for v in found if len(v) >= MIN_REDACTED)


def node_secrets(environ: Mapping[str, str], prefix: str = "DKRON_NATS_") -> frozenset[str]:
    """The node's own credentials in its environment (the bootstrap token, a NATS URL's password): a job
    that reads them (from its environment or /proc) must not show them to whoever may read its output."""
    own = {name: value for name, value in environ.items() if name.startswith(prefix)}
    found = {secret for name, value in own.items() for secret in _secrets_in(name, value)}
    return frozenset(v for v in found if len(v) >= MIN_REDACTED)


def secret_parameters(job: JobSpec) -> list[str]:
    """The names of the run parameters the job marks secret: their values in a run's env are secrets."""
    return [parameter.name for parameter in job.parameters or () if parameter.secret]


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
    return _text_secrets(value)


def _pair_secrets(entry: str, separator: str) -> list[str]:
    name, sep, secret = entry.partition(separator)
    if sep and is_secret_key(name):
        return [secret, secret.strip()]
    return _text_secrets(entry)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret as `***` (longest first, so that none is left half)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


class StreamRedactor:
    """Cuts secrets out of output that arrives in pieces (as CI systems mask their logs).

    A secret may be split across two pieces: the end of a piece that could be the start of a secret is held
    back until the next piece (or `flush`, at the end) shows whether it is one. Nothing else is delayed.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self._starts = {s[0] for s in self._secrets}
        self._held = b""

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def feed(self, data: bytes) -> bytes:
        """What of `held + data` can be shown now, secrets masked."""
        if not self._secrets:
            return data
        text = self._held + data
        for secret in self._secrets:
            text = text.replace(secret, _MASK_BYTES)
        cut = len(text) - self._partial(text)
        self._held = text[cut:]
        return text[:cut]

    def flush(self) -> bytes:
        """The held-back end: the output ended before it could become a secret."""
        held, self._held = self._held, b""
        return held

    def _partial(self, text: bytes) -> int:
        """How many bytes at the end of `text` are the beginning of a secret."""
        for start in range(max(0, len(text) - len(self._secrets[0]) + 1), len(text)):
            if text[start] in self._starts:
                tail = text[start:]
                if any(secret.startswith(tail) for secret in self._secrets):
                    return len(text) - start
        return 0
