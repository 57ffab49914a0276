"""The built-in processors against real counterparts, and how the agent applies a job's processors.

files writes into a temporary directory; syslog sends to a unix datagram socket (or a UDP socket) the test
binds and reads; fluent posts to a real HTTP server the test runs.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from dkron_nats.agent.executor import ConfigError, ExecutionContext
from dkron_nats.agent.processors import (
    FilesProcessor,
    FluentProcessor,
    LogProcessor,
    ProcessorError,
    SyslogProcessor,
)
from dkron_nats.agent.registry import ProcessorRegistry
from dkron_nats.agent.runner import apply_processors
from dkron_nats.config import Settings
from dkron_nats.models import Execution
from tests.harness import free_port

pytestmark = pytest.mark.anyio

CTX = ExecutionContext(job_name="backup", execution_id="exec-42", node_name="node-a")
FORWARDED = ["true", "1", "t", "T", "TRUE", "True"]
NOT_FORWARDED = ["false", "0", "yes", "on", "", None]
"""Go's ParseBool: anything but its true spellings (even "yes") means false; None means the key is absent."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def finished(output: str = "hello\n", success: bool = True) -> Execution:
    return Execution(
        id="exec-42",
        job_name="backup",
        group=7,
        node_name="node-a",
        output=output,
        success=success,
        status="success" if success else "failed",
    )


def with_forward(config: dict[str, str], forward: str | None) -> dict[str, str]:
    return config if forward is None else {**config, "forward": forward}


# --------------------------------------------------------------------------- log


async def test_log_prints_a_successful_output_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    done = await LogProcessor().process(finished("line 1\nline 2"), {}, CTX)
    out, err = capsys.readouterr()
    assert out == (
        "----- BEGIN OUTPUT job=backup execution=exec-42 -----\nline 1\nline 2\n----- END OUTPUT -----\n"
    )
    assert err == ""
    assert done.output == "Output in dkron log"


async def test_log_prints_a_failed_output_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    done = await LogProcessor().process(finished("boom\n", success=False), {"forward": "true"}, CTX)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "----- BEGIN OUTPUT job=backup execution=exec-42 -----\nboom\n----- END OUTPUT -----\n"
    assert done.output == "boom\n"
    assert done.success is False


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("forward", NOT_FORWARDED)
async def test_files_stores_the_path_without_forward(tmp_path: Path, forward: str | None) -> None:
    config = with_forward({"log_dir": str(tmp_path)}, forward)
    done = await FilesProcessor(tmp_path).process(finished(), config, CTX)
    path = tmp_path / "exec-42.log"
    assert path.read_text() == "hello\n"
    assert done.output == str(path)


@pytest.mark.parametrize("forward", FORWARDED)
async def test_files_keeps_the_output_with_forward(tmp_path: Path, forward: str) -> None:
    done = await FilesProcessor(tmp_path).process(
        finished(), {"log_dir": str(tmp_path), "forward": forward}, CTX
    )
    assert (tmp_path / "exec-42.log").read_text() == "hello\n"
    assert done.output == "hello\n"


async def test_files_creates_a_missing_log_dir(tmp_path: Path) -> None:
    log_dir = tmp_path / "not" / "yet"
    await FilesProcessor(tmp_path).process(finished("é\n"), {"log_dir": str(log_dir)}, CTX)
    assert (log_dir / "exec-42.log").read_text(encoding="utf-8") == "é\n"


@pytest.mark.parametrize("success", [True, False])
async def test_files_that_cannot_be_written_say_so_in_the_output(tmp_path: Path, success: bool) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be created below a file, not even by root
    config = {"log_dir": str(blocker / "logs")}
    done = await FilesProcessor(tmp_path).process(finished("hello", success), config, CTX)
    assert done.output.startswith("hello\nfiles: could not write ")
    assert "processors.files.log_dir" in done.output
    assert done.success is success


async def test_files_refuses_an_arbitrary_absolute_log_dir(tmp_path: Path) -> None:
    """Without --files-processor-root, files go under <data-dir>/processor-files, not anywhere a job says."""
    files = FilesProcessor()
    config = {"log_dir": str(tmp_path)}
    with pytest.raises(ConfigError) as refused:
        files.validate(config)
    assert f'log_dir "{tmp_path}" is outside dkron.data/processor-files' in str(refused.value)
    assert "processors.files.log_dir" in str(refused.value)
    done = await files.process(finished(), config, CTX)
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []
    assert done.output == f"hello\n{refused.value}\n"  # kept, with the reason


async def test_files_takes_a_relative_log_dir_under_its_root(tmp_path: Path) -> None:
    files = FilesProcessor(tmp_path / "root")
    nested = await files.process(finished(), {"log_dir": "nightly/db"}, CTX)
    at_root = await files.process(finished("at the root\n"), {}, CTX)
    assert nested.output == str(tmp_path / "root" / "nightly" / "db" / "exec-42.log")
    assert at_root.output == str(tmp_path / "root" / "exec-42.log")
    assert (tmp_path / "root" / "exec-42.log").read_text() == "at the root\n"
    assert (tmp_path / "root" / "exec-42.log").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("log_dir", ["../elsewhere", "a/../../elsewhere", "/etc", "/tmp"])
def test_files_refuses_a_log_dir_that_leaves_its_root(tmp_path: Path, log_dir: str) -> None:
    with pytest.raises(ConfigError) as refused:
        FilesProcessor(tmp_path / "root").validate({"log_dir": log_dir})
    assert "processors.files.log_dir" in str(refused.value)
    assert str(tmp_path / "root") in str(refused.value)


def test_files_accepts_an_absolute_log_dir_inside_its_root(tmp_path: Path) -> None:
    FilesProcessor(tmp_path).validate({"log_dir": str(tmp_path / "jobs")})
    FilesProcessor(Path("/var/log/dkron")).validate({"log_dir": "/var/log/dkron"})  # Dkron's default


async def test_files_does_not_follow_a_symbolic_link_out_of_its_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    files = FilesProcessor(root)
    done = await files.process(finished(), {"log_dir": "escape/deeper"}, CTX)
    assert "leads out of" in done.output
    assert [p async for p in anyio.Path(outside).iterdir()] == []  # not even the directory was made there
    (root / "exec-42.log").symlink_to(outside / "planted")
    done = await files.process(finished(), {}, CTX)
    assert "files: could not write" in done.output
    assert not (outside / "planted").exists()


def test_files_root_comes_from_the_node_settings(tmp_path: Path) -> None:
    files = FilesProcessor()
    files.configure(Settings(data_dir=tmp_path / "data"))
    assert files.root == tmp_path / "data" / "processor-files"
    files.configure(Settings(data_dir=tmp_path / "data", files_processor_root=tmp_path / "logs"))
    assert files.root == tmp_path / "logs"
    files.validate({"log_dir": str(tmp_path / "logs" / "x")})


# --------------------------------------------------------------------------- syslog


@dataclass
class DatagramReceiver:
    sock: socket.socket
    address: str

    def messages(self, count: int) -> list[bytes]:
        self.sock.settimeout(5)  # a deadline: what was sent is already queued
        return [self.sock.recv(65536) for _ in range(count)]

    def nothing_more(self) -> bool:
        self.sock.settimeout(0)
        try:
            self.sock.recv(65536)
        except BlockingIOError:
            return True
        return False


@pytest.fixture
def unix_syslog() -> Iterator[DatagramReceiver]:
    # Not tmp_path: a unix socket path must fit in 108 bytes.
    directory = tempfile.mkdtemp(prefix="syslog")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        path = str(Path(directory) / "log")
        sock.bind(path)
        yield DatagramReceiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory)


@pytest.fixture
def udp_syslog() -> Iterator[DatagramReceiver]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = free_port()
        sock.bind(("127.0.0.1", port))
        yield DatagramReceiver(sock, f"127.0.0.1:{port}")
    finally:
        sock.close()


STAMP = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
"""RFC 3164: "Mmm dd hh:mm:ss", the day padded with a space."""
LOCAL_HEADER = STAMP + r" dkron\[\d+\]: "


async def test_syslog_sends_a_success_as_cron_info(unix_syslog: DatagramReceiver) -> None:
    done = await SyslogProcessor().process(finished(), {"address": unix_syslog.address}, CTX)
    [message] = unix_syslog.messages(1)
    match = re.fullmatch(f"<78>{LOCAL_HEADER}job=backup execution=exec-42: hello\n", message.decode())
    assert match, message
    assert done.output == "Output in syslog"


async def test_syslog_sends_a_failure_as_cron_err(unix_syslog: DatagramReceiver) -> None:
    config = {"address": unix_syslog.address, "forward": "true"}
    done = await SyslogProcessor().process(finished("boom", success=False), config, CTX)
    [message] = unix_syslog.messages(1)
    assert re.fullmatch(f"<75>{LOCAL_HEADER}job=backup execution=exec-42: boom", message.decode())
    assert done.output == "boom"


async def test_syslog_splits_long_output_in_order(unix_syslog: DatagramReceiver) -> None:
    output = "".join(f"line {i:04d} " + "é" * 30 + "\n" for i in range(60))  # about 4 KiB, multi-byte
    await SyslogProcessor().process(finished(output), {"address": unix_syslog.address}, CTX)
    texts: list[str] = []
    while len("".join(texts)) < len(output):
        [message] = unix_syslog.messages(1)
        assert len(message) < 1024
        head = re.match(f"<78>{LOCAL_HEADER}job=backup execution=exec-42: ", message.decode())
        assert head, message
        texts.append(message.decode()[head.end() :])
    assert unix_syslog.nothing_more()
    assert len(texts) > 1
    assert "".join(texts) == output


async def test_syslog_over_udp_names_the_host(udp_syslog: DatagramReceiver) -> None:
    await SyslogProcessor().process(finished(), {"address": udp_syslog.address}, CTX)
    [message] = udp_syslog.messages(1)
    header = f"<78>{STAMP} {re.escape(socket.gethostname())} " + r"dkron\[\d+\]: "
    assert re.fullmatch(f"{header}job=backup execution=exec-42: hello\n", message.decode())


@pytest.mark.parametrize("forward", NOT_FORWARDED)
async def test_syslog_marker_without_forward(unix_syslog: DatagramReceiver, forward: str | None) -> None:
    config = with_forward({"address": unix_syslog.address}, forward)
    done = await SyslogProcessor().process(finished(), config, CTX)
    assert done.output == "Output in syslog"
    assert unix_syslog.messages(1)


async def test_syslog_without_a_listener_names_the_address() -> None:
    directory = tempfile.mkdtemp(prefix="syslog")
    try:
        missing = str(Path(directory) / "nobody")
        with pytest.raises(ProcessorError, match=re.escape(missing)) as raised:
            await SyslogProcessor().process(finished(), {"address": missing}, CTX)
        assert "processors.syslog.address" in str(raised.value)
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("address", ["/dev/log", "localhost:514", "10.0.0.1:1514", "[::1]:514", ""])
def test_syslog_accepts_a_path_or_host_port(address: str) -> None:
    SyslogProcessor().validate({"address": address})


@pytest.mark.parametrize("address", ["syslog", "host:", ":514", "host:port", "host:70000", "host:0"])
def test_syslog_rejects_a_bad_address(address: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("processors.syslog.address")):
        SyslogProcessor().validate({"address": address})


# --------------------------------------------------------------------------- fluent


@dataclass
class Posted:
    path: str
    content_type: str
    body: Any


@dataclass
class HttpReceiver:
    port: int
    posted: list[Posted] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def fluent_bit() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            receiver.posted.append(Posted(self.path, self.headers.get("Content-Type", ""), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what was posted instead."""

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def fluent_env(monkeypatch: pytest.MonkeyPatch, port: int, tag: str | None = None) -> None:
    monkeypatch.setenv("FLUENTBIT_HOST", "127.0.0.1")
    monkeypatch.setenv("FLUENTBIT_PORT", str(port))
    if tag is None:
        monkeypatch.delenv("FLUENTBIT_TAG", raising=False)
    else:
        monkeypatch.setenv("FLUENTBIT_TAG", tag)


async def test_fluent_posts_to_the_environment_address(
    fluent_bit: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fluent_env(monkeypatch, fluent_bit.port, "cron.jobs")
    done = await FluentProcessor().process(finished("hello\n"), {}, CTX)
    [posted] = fluent_bit.posted
    assert posted.path == "/cron.jobs"
    assert posted.content_type == "application/json"
    assert posted.body == {"host": "node-a", "job_name": "backup", "message": "hello\n"}
    assert done.output == "Output sent to Fluent"


async def test_fluent_tag_defaults_to_dkron(
    fluent_bit: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fluent_env(monkeypatch, fluent_bit.port)
    done = await FluentProcessor().process(finished(), {"forward": "true"}, CTX)
    assert [p.path for p in fluent_bit.posted] == ["/dkron"]
    assert done.output == "hello\n"


async def test_fluent_config_keys_override_the_environment(
    fluent_bit: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fluent_env(monkeypatch, free_port(), "from-env")  # nothing listens there
    config = {"host": "127.0.0.1", "port": str(fluent_bit.port), "tag": "from-config"}
    await FluentProcessor().process(finished(), config, CTX)
    assert [p.path for p in fluent_bit.posted] == ["/from-config"]


@pytest.mark.parametrize("forward", NOT_FORWARDED)
async def test_fluent_marker_without_forward(
    fluent_bit: HttpReceiver, monkeypatch: pytest.MonkeyPatch, forward: str | None
) -> None:
    fluent_env(monkeypatch, fluent_bit.port)
    done = await FluentProcessor().process(finished(), with_forward({}, forward), CTX)
    assert done.output == "Output sent to Fluent"
    assert fluent_bit.posted[0].body["message"] == "hello\n"


async def test_fluent_error_status_fails_the_processor(
    fluent_bit: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fluent_env(monkeypatch, fluent_bit.port)
    fluent_bit.status = 503
    with pytest.raises(ProcessorError, match="503"):
        await FluentProcessor().process(finished(), {}, CTX)


async def test_fluent_without_a_listener_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    fluent_env(monkeypatch, port)
    with pytest.raises(ProcessorError, match=f"http://127.0.0.1:{port}/dkron"):
        await FluentProcessor().process(finished(), {}, CTX)


async def test_fluent_bad_port_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUENTBIT_PORT", "http")
    with pytest.raises(ConfigError, match="FLUENTBIT_PORT"):
        await FluentProcessor().process(finished(), {}, CTX)


@pytest.mark.parametrize("config", [{"port": "abc"}, {"port": "0"}, {"port": "65536"}, {"tag": ""}])
def test_fluent_rejects_a_bad_config(config: dict[str, str]) -> None:
    key = next(iter(config))
    with pytest.raises(ConfigError, match=re.escape(f"processors.fluent.{key}")):
        FluentProcessor().validate(config)


# --------------------------------------------------------------------------- applied by the agent


class Exploding:
    name = "exploding"

    def validate(self, config: Mapping[str, str]) -> None:
        """Anything goes."""

    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        raise RuntimeError("disk on fire")


class Hanging(Exploding):
    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class Overreaching(Exploding):
    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        return msgspec.structs.replace(execution, success=True, status="success", id="other", output="tidied")


def registry(**extra: Any) -> ProcessorRegistry:
    # The tests' log_dir is a tmp_path: under the system's temporary directory.
    files = FilesProcessor(Path(tempfile.gettempdir()))
    return ProcessorRegistry({"files": files, "log": LogProcessor(), **extra})


async def test_processors_run_in_the_jobs_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = {"files": {"log_dir": str(tmp_path)}, "log": {}}
    done = await apply_processors(finished(), configs, registry(), CTX)
    path = tmp_path / "exec-42.log"
    assert path.read_text() == "hello\n"
    assert f"execution=exec-42 -----\n{path}\n----- END OUTPUT" in capsys.readouterr().out
    assert done.output == "Output in dkron log"


async def test_missing_and_failing_processors_leave_notes_and_the_rest_runs(tmp_path: Path) -> None:
    configs = {"exploding": {}, "nosuch": {}, "files": {"log_dir": str(tmp_path), "forward": "true"}}
    done = await apply_processors(
        finished("boom", success=False), configs, registry(exploding=Exploding()), CTX
    )
    expected = (
        "boom\n"
        "processor exploding failed: disk on fire\n"
        "processor nosuch is not installed on node node-a; skipped\n"
    )
    assert done.output == expected
    assert (tmp_path / "exec-42.log").read_text() == expected  # files ran after the other two
    assert (done.success, done.status) == (False, "failed")


async def test_a_hanging_processor_is_cut_off_at_its_deadline() -> None:
    with anyio.fail_after(10):
        done = await apply_processors(
            finished(), {"hanging": {}}, registry(hanging=Hanging()), CTX, deadline=0.2
        )
    assert done.output == "hello\nprocessor hanging failed: no result within 0.2s\n"


async def test_a_processor_cannot_change_the_runs_outcome_or_identity() -> None:
    done = await apply_processors(
        finished("boom", success=False), {"over": {}}, registry(over=Overreaching()), CTX
    )
    assert done.output == "tidied"
    assert (done.id, done.success, done.status) == ("exec-42", False, "failed")
