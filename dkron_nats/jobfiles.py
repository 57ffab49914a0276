"""Reading jobs for `jobs apply -f` and `import`: files, directories and stdin, checked before they are sent.

A source holds one job, a list of jobs, or (YAML) several documents of either. Booleans and numbers in the
string maps (`shell: true`, `build: 42` in executor_config, metadata, tags, processors) become strings, as
people mean them; any other wrong type is refused naming the file and the key path, e.g.
`jobs.yaml: jobs[2].executor_config.shell: expected a string, got a list`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec
import yaml

from dkron_nats.apiclient import ApiError
from dkron_nats.jobinput import JobInput

STDIN = "-"
JOB_SUFFIXES = (".json", ".yaml", ".yml")
"""The files of a directory that `-f DIR` applies."""
READ_ONLY_FIELDS = (
    "id",
    "success_count",
    "error_count",
    "last_success",
    "last_error",
    "status",
    "next",
    "dependent_jobs",
    "depended_on_by",
    "partition",
)
"""Computed by the server: never written by apply or import, never compared."""
JOB_FIELDS = frozenset(JobInput.__struct_fields__)
STRING_MAPS = ("executor_config", "tags", "metadata")
MAP_OF_MAPS = ("processors",)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class FileJob:
    """A job as a source gives it, and which source that was (for the report)."""

    job: dict[str, Any]
    source: str


# --- YAML ------------------------------------------------------------------------------------------


class _JobLoader(yaml.SafeLoader):
    """YAML where only true/false are booleans and times stay text: `on: success` (in depends_on) keeps
    its key, and `starts_at` is sent as written."""


_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_JobLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


# --- sources ---------------------------------------------------------------------------------------


def read_sources(sources: Sequence[str]) -> list[FileJob]:
    """The checked jobs of every `-f` source, in order: a file, `-` (stdin) or a directory's job files."""
    found: list[FileJob] = []
    for source in sources:
        for label, text, suffix in _texts(source):
            found += [FileJob(job, label) for job in checked_jobs(parse_jobs(text, suffix, label), label)]
    return found


def _texts(source: str) -> list[tuple[str, str, str]]:
    """(label, text, suffix) of each file a source names."""
    if source == STDIN:
        return [("stdin", sys.stdin.read(), "")]
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in JOB_SUFFIXES and p.is_file())
        if not files:
            raise ApiError(f"{path} holds no job file: -f DIR applies its *.json, *.yaml and *.yml files")
        return [(str(p), _read(p), p.suffix.lower()) for p in files]
    return [(str(path), _read(path), path.suffix.lower())]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(f"cannot read {path}: {exc}") from None


def parse_jobs(text: str, suffix: str, label: str) -> list[Any]:
    """The documents of a JSON (`.json`) or YAML text, flattened into one list of jobs. Text without a
    suffix (stdin) is JSON when it parses as JSON, else YAML."""
    try:
        if suffix == ".json" or (not suffix and text.lstrip()[:1] in ("{", "[") and _is_json(text)):
            documents = [json.loads(text)]
        else:
            documents = list(yaml.load_all(text, Loader=_JobLoader))
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(f"cannot read {label}: {exc}") from None
    found: list[Any] = []
    for document in documents:
        if document is not None:
            found += document if isinstance(document, list) else [document]
    return found


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def read_backup(path: Path) -> list[Any]:
    """A Dkron backup: the JSON array of jobs `/v1/restore` takes."""
    try:
        found = json.loads(_read(path))
    except ValueError as exc:
        raise ApiError(f"cannot read the backup {path}: {exc}") from None
    if not isinstance(found, list):
        raise ApiError(f"{path} is not a Dkron backup: that is a JSON array of jobs, as /v1/restore takes")
    return found


# --- checking --------------------------------------------------------------------------------------


def checked_jobs(found: Sequence[Any], source: str, *, strict: bool = True) -> list[dict[str, Any]]:
    """Jobs as objects with a name, without read-only fields, with string maps as strings and every field
    of the right type. Unknown fields are refused (`strict`: a typo in a file) or dropped with a note
    (another Dkron version's extra fields)."""
    checked: list[dict[str, Any]] = []
    for index, job in enumerate(found):
        where = f"{source}: jobs[{index}]"
        if not isinstance(job, dict) or not isinstance(job.get("name"), str) or not job["name"]:
            raise ApiError(f'{where} is not an object with a "name"; fix the file')
        unknown = sorted(str(key) for key in job if key not in JOB_FIELDS and key not in READ_ONLY_FIELDS)
        if unknown and strict:
            raise ApiError(
                f"{where} (job {job['name']}) has unknown field(s) {', '.join(unknown)}; "
                "`dkron-nats jobs get NAME -o yaml` shows the fields a job has"
            )
        if unknown:
            click.echo(f"note: job {job['name']}: ignoring field(s) {', '.join(unknown)}", err=True)
        kept = stringified({k: v for k, v in job.items() if k in JOB_FIELDS and k not in READ_ONLY_FIELDS})
        error = type_error(kept)
        if error is not None:
            raise ApiError(f"{where}{error}; fix the file")
        checked.append(kept)
    return checked


def stringified(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job with booleans and numbers in its string maps (and their keys) written as strings."""
    out = dict(job)
    for field in STRING_MAPS:
        if isinstance(out.get(field), dict):
            out[field] = _string_map(out[field])
    for field in MAP_OF_MAPS:
        if isinstance(out.get(field), dict):
            out[field] = {
                _as_text(k): _string_map(v) if isinstance(v, dict) else v for k, v in out[field].items()
            }
    return out


def _string_map(values: Mapping[Any, Any]) -> dict[Any, Any]:
    return {_as_text(key): _as_text(value) for key, value in values.items()}


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def type_error(job: Mapping[str, Any]) -> str | None:
    """What is of the wrong type, as `.key.path: expected ...`; None when every field fits."""
    for field in STRING_MAPS:
        error = _string_map_error(job.get(field), f".{field}")
        if error is not None:
            return error
    for field in MAP_OF_MAPS:
        for key, config in (job.get(field) or {}).items() if isinstance(job.get(field), dict) else ():
            error = _string_map_error(config, f".{field}{key_path(key)}")
            if error is not None:
                return error
    try:
        msgspec.convert(dict(job), JobInput)
    except msgspec.ValidationError as exc:
        return _described(str(exc))
    return None


def _string_map_error(values: Any, path: str) -> str | None:
    if values is None:
        return None
    if not isinstance(values, dict):
        return f"{path}: expected a map of strings, got {_kind(values)}"
    for key, value in values.items():
        if not isinstance(value, str):
            return f"{path}{key_path(key)}: expected a string, got {_kind(value)}"
    return None


def key_path(key: Any) -> str:
    """`.key`, or `["a key"]` for one that is not letters, digits, '_' and '-'."""
    text = str(key)
    return f".{text}" if _PLAIN_KEY.fullmatch(text) else f"[{json.dumps(text)}]"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


_MSGSPEC_ERROR = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_EXPECTED = re.compile(r"^Expected `(?P<wanted>[^`]+)`, got `(?P<got>[^`]+)`$")
_TYPE_NAMES = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "object": "a map",
    "array": "a list",
    "null": "null",
}


def _described(message: str) -> str:
    """msgspec's `Expected `int | null`, got `str` - at `$.retries`` as `.retries: expected a whole
    number, got a string`."""
    found = _MSGSPEC_ERROR.match(message)
    what, path = (found.group("what"), found.group("path") or "") if found else (message, "")
    expected = _EXPECTED.match(what)
    if expected is not None:
        wanted = [_TYPE_NAMES.get(t, t) for t in expected.group("wanted").split(" | ") if t != "null"]
        got = expected.group("got")
        what = f"expected {' or '.join(wanted)}, got {_TYPE_NAMES.get(got, got)}"
    else:
        what = what[:1].lower() + what[1:]
    return f"{path}: {what}"
