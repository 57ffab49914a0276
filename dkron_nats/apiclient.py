"""The small HTTP client every API command of the CLI shares: options, requests, exit codes, tables.

Exit codes are the same for every command, so scripts can rely on them:
0 done; 1 the server refused (or the input file is wrong); 2 wrong usage (click's own);
3 not found (404); 4 the server cannot be reached; 5 conflict or busy (409, or 503: paused);
6 the job ran and failed (`jobs run --follow`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
import httpx

from dkron_nats.config import ENV_PREFIX

DONE = 0
REFUSED = 1
USAGE = 2
NOT_FOUND = 3
UNREACHABLE = 4
BUSY = 5
JOB_FAILED = 6

TOKEN_ENV = ENV_PREFIX + "TOKEN"
API_URL_ENV = ENV_PREFIX + "API_URL"
DEFAULT_SERVER = "http://127.0.0.1:8080"
TIMEOUT = 15.0

F = TypeVar("F", bound=Callable[..., Any])


class ApiError(Exception):
    """A request that did not succeed, with the exit code it means and a message for people."""

    def __init__(self, message: str, exit_code: int = REFUSED, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def exit_code_of(status: int) -> int:
    """The documented exit code of an HTTP error status."""
    if status == 404:
        return NOT_FOUND
    if status in (409, 503):
        return BUSY
    return REFUSED


@dataclass(frozen=True)
class Api:
    """One server's API, called with the caller's token."""

    server_url: str
    token: str = ""
    setting: str = f"--server, env {API_URL_ENV}"
    """Where this server's URL came from, for error messages."""

    def url(self, path: str) -> str:
        return self.server_url.rstrip("/") + path

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def response(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        missing: str = "",
    ) -> httpx.Response:
        """The answer to one request; ApiError when it cannot be sent or is an error status.

        `missing` is what a 404 means here ("no job named x"), since many of Dkron's 404s have no body.
        """
        url = self.url(path)
        try:
            response = httpx.request(
                method, url, json=body, params=params, headers=self.auth_headers(), timeout=TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise self.unreachable(url, exc) from None
        if response.status_code >= 400:
            raise self.refusal(response, missing)
        return response

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        missing: str = "",
    ) -> Any:
        """The JSON answer to one request; ApiError when it is refused or not JSON."""
        return self.decoded(self.response(method, path, body, params, missing))

    def decoded(self, response: httpx.Response) -> Any:
        """The JSON body of an answer; ApiError when it is something else (not an API at that URL)."""
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"the answer from {response.url} is not JSON: is the URL ({self.setting}) that of a "
                "dkron-nats or Dkron API?"
            ) from None

    @contextmanager
    def stream(self, path: str, accept: str, missing: str = "") -> Iterator[httpx.Response]:
        """A streamed GET with no read timeout: a followed execution may be silent for long."""
        url = self.url(path)
        headers = {**self.auth_headers(), "Accept": accept}
        timeout = httpx.Timeout(TIMEOUT, read=None)
        try:
            with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self.refusal(response, missing)
                yield response
        except httpx.HTTPError as exc:
            raise self.unreachable(url, exc) from None

    def unreachable(self, url: str, exc: Exception) -> ApiError:
        return ApiError(f"cannot reach the API at {url} ({self.setting}): {exc}", UNREACHABLE)

    def refusal(self, response: httpx.Response, missing: str) -> ApiError:
        status = response.status_code
        text = response.text.strip()
        if status == 404 and missing and not text:
            text = missing
        hint = ""
        if status in (401, 403):
            hint = f" (set {TOKEN_ENV} or --token to a token with the needed role)"
        elif status == 503 and "paused" in text:
            hint = " (dkron-nats unpause lifts it)"
        verdict = "not found" if status == 404 else "the server refused"
        return ApiError(f"{verdict}: {status} {text}{hint}", exit_code_of(status), status)


def fail(error: ApiError) -> NoReturn:
    click.echo(f"error: {error.message}", err=True)
    sys.exit(error.exit_code)


def api_options(command: F) -> F:
    """`--server` and `--token`, given to the command as one `api: Api`; an ApiError ends it with its code."""

    @functools.wraps(command)
    def with_api(*args: Any, server_url: str, token: str, **kwargs: Any) -> Any:
        try:
            return command(*args, api=Api(server_url, token), **kwargs)
        except ApiError as error:
            fail(error)

    with_token = click.option(
        "--token",
        default="",
        envvar=TOKEN_ENV,
        show_default=False,
        help=f"The caller's API token (better: env {TOKEN_ENV}, which `ps` does not show).",
    )(with_api)
    return server_option(with_token)  # type: ignore[no-any-return]


def server_option(command: Any) -> Any:
    return click.option(
        "--server",
        "server_url",
        default=DEFAULT_SERVER,
        envvar=API_URL_ENV,
        show_default=True,
        help=f"Base URL of a dkron-nats server's API (env {API_URL_ENV}).",
    )(command)


def json_option(command: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(command)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Aligned columns with an upper-case header; maps are shown as k=v lists, None as nothing."""
    cells = [[cell_text(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]
    for row in [[column.upper() for column in columns], *cells]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(cell_text(item) for item in value)
    return str(value)
