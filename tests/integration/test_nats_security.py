"""dkron-nats on a NATS that requires TLS and passwords, with the subject permissions of the example config.

A real nats-server runs `deploy/nats-secure.conf` (certificates from a test CA, see `tests/natssecure.py`);
three real dkron-nats servers and two real agents connect to it with `--nats-url tls://...` and their own
users.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import nats
import nkeys
import pytest
from nats.aio.client import Client

from dkron_nats.subjects import run_subject
from tests.cluster import wait_for_async
from tests.harness import DKRON_NATS, Node, finished, free_port, job, running, spawn_nats_server, wait_for
from tests.integration.test_cluster import _servers as cluster_servers
from tests.integration.test_cluster import leaders
from tests.natssecure import TRIGGER_INBOX, SecureNats, TlsFiles, nats_server_with, user_nkey_seed

pytestmark = [pytest.mark.anyio, pytest.mark.nats]
AGENTS = ("agent1", "agent2")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SERVERS = ("server1", "server2", "server3")


@dataclass
class SecuredCluster:
    nats: SecureNats
    servers: list[Node]
    agents: dict[str, Node]

    @property
    def server(self) -> Node:
        return self.servers[0]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    """The secure nats-server, three dkron-nats servers (user `server`), and agents agent1 and agent2, each
    with its own user."""
    base = tmp_path_factory.mktemp("secured")
    nats_server = SecureNats(base / "nats", TlsFiles.create(base / "tls"))
    with contextlib.ExitStack() as stack:
        stack.callback(nats_server.stop)
        nats_server.start()
        servers = [Node(base / name, name=name, extra=nats_server.login_args("server")) for name in SERVERS]
        for server in servers:
            stack.callback(server.stop)
        servers[0].start().wait_leader()  # agents may not create buckets: a server makes them first
        for server in servers[1:]:
            server.start()
        agents: dict[str, Node] = {}
        for name in AGENTS:
            args = [*nats_server.login_args(name), "--tag", f"agent={name}"]
            agents[name] = Node(base / name, name=name, server=False, extra=args)
            stack.callback(agents[name].stop)
            agents[name].start()
        wait_for(lambda: _alive(servers[0]) >= {*SERVERS, *AGENTS}, 30, "every node to join")
        yield SecuredCluster(nats_server, servers, agents)


def _alive(server: Node) -> set[str]:
    return {m["Name"] for m in server.get("/v1/members").json() if m["statusText"] == "alive"}


def _run_on(server: Node, name: str, agent: str, runs: int = 1) -> list[dict[str, Any]]:
    """Create a job for `agent`, run it `runs` times, and return its finished executions."""
    body = job(name, command=f"echo ran-on-{agent}", tags={"agent": agent})
    assert server.post("/v1/jobs", json=body).status_code == 201
    for _ in range(runs):
        assert server.post(f"/v1/jobs/{name}/run").status_code in (200, 202)
    return wait_for(lambda: finished(server, name, runs), 30, f"{runs} runs of {name}")


@contextlib.asynccontextmanager
async def logged_in(
    nats_server: SecureNats, user: str, **options: Any
) -> AsyncIterator[tuple[Client, list[str]]]:
    """A nats-py client logged in as `user`, and the errors (permission violations) the server sends it."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        nats_server.url,
        user=user,
        password=nats_server.passwords[user],
        tls=ssl.create_default_context(cafile=str(nats_server.tls.ca)),
        error_cb=on_error,
        connect_timeout=5,
        max_reconnect_attempts=0,
        **options,
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


def test_a_job_runs_on_an_agent_over_tls_with_only_the_example_permissions(secured: SecuredCluster) -> None:
    runs = _run_on(secured.server, "secure-hello", "agent1")

    assert [(r["node_name"], r["success"]) for r in runs] == [("agent1", True)]
    assert "ran-on-agent1" in runs[0]["output"]
    # The example grants exactly what servers and agents use: nothing they did was refused.
    assert secured.nats.violations("server") == []
    assert secured.nats.violations("agent1") == []


def test_leadership_moves_to_another_server_on_the_secure_nats_when_the_leader_is_killed(
    secured: SecuredCluster,
) -> None:
    leader = next(s for s in secured.servers if s.get("/health").json().get("leader"))
    others = [s for s in secured.servers if s is not leader]
    leader.kill()
    try:
        wait_for(lambda: any(s.get("/health").json().get("leader") for s in others), 30, "a new leader")
        runs = _run_on(others[0], "secure-after-kill", "agent2")
        assert [(r["node_name"], r["success"]) for r in runs] == [("agent2", True)]
    finally:
        leader.start()
    wait_for(lambda: _alive(others[0]) >= {*SERVERS, *AGENTS}, 30, "the killed server to rejoin")
    wait_for(lambda: leader.get("/health").status_code == 200, 30, "the killed server's API")
    assert secured.nats.violations("server") == []


async def test_the_trigger_user_triggers_a_job_and_may_publish_nothing_else(secured: SecuredCluster) -> None:
    server = secured.server
    body = job("secure-trigger", command="echo triggered", tags={"agent": "agent2"})
    assert (await anyio.to_thread.run_sync(lambda: server.post("/v1/jobs", json=body))).status_code == 201

    async with logged_in(secured.nats, "trigger", inbox_prefix=TRIGGER_INBOX) as (nc, errors):
        reply = await nc.request("dkron.trigger.secure-trigger", b"", timeout=10)
        assert json.loads(reply.data)["status"] == "accepted"
        runs = await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: finished(server, "secure-trigger", 1), 30, "the triggered run")
        )
        assert runs[0]["success"]
        assert runs[0]["node_name"] == "agent2"

        forbidden = [run_subject("agent1"), "dkron.result.agent1", "dkron.leader.run", "$KV.dkron-jobs.evil"]
        for subject in forbidden:
            await nc.publish(subject, b"{}")
        await nc.subscribe("dkron.>")
        await nc.flush()

        def refused() -> bool:  # nats-py lower-cases the subject it quotes
            said = [e for e in errors if "permissions violation" in e]
            return all(any(f'"{s.lower()}"' in e for e in said) for s in [*forbidden, "dkron.>"])

        await wait_for_async(_async(refused), 10, f"violations for {forbidden} and dkron.>")


async def test_an_agent_cannot_receive_another_agents_runs(secured: SecuredCluster) -> None:
    """agent1's credentials cannot join agent2's queue group: agent2 gets every run, the impostor none."""
    async with logged_in(secured.nats, "agent1", inbox_prefix="_INBOX.agent1") as (nc, errors):
        impostor = await nc.subscribe(run_subject("agent2"), queue="agent2")
        await nc.flush()
        await wait_for_async(
            _async(lambda: any("permissions violation for subscription" in e for e in errors)),
            10,
            "the impostor's subscription to be refused",
        )
        runs = await anyio.to_thread.run_sync(lambda: _run_on(secured.server, "secure-impostor", "agent2", 5))

        assert {(r["node_name"], r["success"]) for r in runs} == {("agent2", True)}
        assert impostor.pending_msgs == 0
    assert secured.nats.violations("agent2") == []


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ("--nats-password", "requires credentials"),
        ("--nats-tls-ca", "--nats-tls-ca"),
    ],
)
def test_start_up_fails_clearly_without_credentials_or_the_ca(
    secured: SecuredCluster, tmp_path: Path, drop: str, expected: str
) -> None:
    args = secured.nats.login_args("agent1")
    at = args.index(drop)
    if drop == "--nats-password":
        del args[at - 2 : at + 2]  # the user goes with the password
    else:
        del args[at : at + 2]
    result = _run_agent(tmp_path, "agent1", args)

    assert result.returncode != 0
    assert expected in result.stderr
    assert "cannot connect to NATS" in result.stderr
    assert secured.nats.passwords["agent1"] not in result.stderr


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--nats-tls-cert", "{cert}"], "--nats-tls-key is missing"),
        (["--nats-tls-ca", "{missing}"], "--nats-tls-ca {missing}: no such file"),
        (["--nats-tls-ca", "{key}"], "--nats-tls-ca {key}: not a PEM CA certificate"),
        (["--nats-user", "u"], "--nats-password is missing"),
        (["--nats-token", "t", "--nats-user", "u", "--nats-password", "p"], "choose one"),
        (["--nats-nkey-seed", "{cert}"], "--nats-nkey-seed {cert}: not an NKey seed"),
        (["--nats-creds", "{cert}"], "--nats-creds {cert}: not a NATS credentials file"),
    ],
)
def test_bad_security_options_are_refused_naming_the_option(
    tmp_path: Path, options: list[str], expected: str
) -> None:
    tls = TlsFiles.create(tmp_path / "tls")
    names = {"cert": tls.cert, "key": tls.key, "missing": tmp_path / "nope.pem"}
    args = ["--nats-url", "tls://127.0.0.1:1", *(o.format(**names) for o in options)]
    result = _run_agent(tmp_path, "bad", args, timeout=30)

    assert result.returncode == 2
    assert expected.format(**names) in result.stderr


def test_print_config_masks_the_nats_password_and_token(tmp_path: Path) -> None:
    args = [
        "--nats-url",
        "nats://u:url-secret@127.0.0.1:4222",
        "--nats-user",
        "u",
        "--nats-password",
        "pw-secret",
    ]
    shown = _run_agent(tmp_path, "cfg", [*args, "--print-config"], timeout=30)
    token = _run_agent(
        tmp_path, "cfg", ["--nats-url", "nats://h:1", "--nats-token", "tk-secret", "--print-config"]
    )

    assert shown.returncode == 0
    assert token.returncode == 0
    config = json.loads(shown.stdout)
    assert config["nats_password"] == "(set)"
    assert json.loads(token.stdout)["nats_token"] == "(set)"
    assert config["nats_urls"] == ["nats://u:***@127.0.0.1:4222"]
    for secret in ("url-secret", "pw-secret", "tk-secret"):
        assert secret not in shown.stdout + token.stdout


@pytest.mark.parametrize(
    "secret",
    [["--nats-user", "dkron", "--nats-password", 'p"w\\$x #1'], ["--nats-token", 'tök"en\\ #2']],
    ids=["password", "token"],
)
def test_the_embedded_server_with_tls_and_credentials_serves_a_second_node(
    tmp_path: Path, secret: list[str]
) -> None:
    tls = TlsFiles.create(tmp_path / "tls")
    login = ["--nats-tls-ca", str(tls.ca), *secret]
    serve_tls = ["--nats-tls-cert", str(tls.cert), "--nats-tls-key", str(tls.key)]
    first = Node(tmp_path / "first", name="first", extra=[*login, *serve_tls])
    url = f"tls://127.0.0.1:{first.nats_port}"
    tag = ["--tag", "agent=second"]
    second = Node(tmp_path / "second", name="second", server=False, extra=["--nats-url", url, *login, *tag])
    with running(first), running(second, leader=False):
        wait_for(lambda: "second" in _alive(first), 30, "the second node to join")
        runs = _run_on(first, "embedded-tls", "second")
        assert [(r["node_name"], r["success"]) for r in runs] == [("second", True)]

        stranger = _run_agent(tmp_path, "stranger", ["--nats-url", url, "--nats-tls-ca", str(tls.ca)])
        assert stranger.returncode != 0
        assert "requires credentials" in stranger.stderr
        wrong = _run_agent(tmp_path, "wrong", ["--nats-url", url, *login[:-1], "wrong-secret"])
        assert wrong.returncode != 0
        assert "refused the credentials" in wrong.stderr
        plain_url = f"nats://127.0.0.1:{first.nats_port}"
        unverified = _run_agent(tmp_path, "unverified", ["--nats-url", plain_url, *secret])
        assert unverified.returncode != 0
        assert "cannot be verified" in unverified.stderr


def test_a_node_logs_in_with_an_nkey_seed_and_a_wrong_seed_is_refused(tmp_path: Path) -> None:
    seed, other = user_nkey_seed(), user_nkey_seed()
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    mine, theirs = tmp_path / "user.nk", tmp_path / "other.nk"
    mine.write_bytes(seed + b"\n")
    theirs.write_bytes(other + b"\n")
    users = f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}'
    with nats_server_with(tmp_path / "nats", users) as url:
        node = Node(tmp_path / "node", extra=["--nats-url", url, "--nats-nkey-seed", str(mine)])
        with running(node):
            assert node.get("/health").json()["leader"]

        refused = _run_agent(tmp_path, "other", ["--nats-url", url, "--nats-nkey-seed", str(theirs)])
    assert refused.returncode != 0
    assert "refused the credentials of --nats-nkey-seed" in refused.stderr
    assert other.decode() not in refused.stderr


def test_the_tls_server_name_option_and_a_plain_text_server_with_tls_options(tmp_path: Path) -> None:
    tls = TlsFiles.create(tmp_path / "tls", "nats.internal")  # not valid for 127.0.0.1
    serve = f'tls {{ cert_file: "{tls.cert}", key_file: "{tls.key}" }}'
    with nats_server_with(tmp_path / "nats", serve) as plain_url:
        url = plain_url.replace("nats://", "tls://")
        named = ["--nats-url", url, "--nats-tls-ca", str(tls.ca), "--nats-tls-server-name", "nats.internal"]
        with running(Node(tmp_path / "named", name="named", extra=named)) as node:
            assert node.get("/health").json()["leader"]
        unnamed = _run_agent(tmp_path, "unnamed", ["--nats-url", url, "--nats-tls-ca", str(tls.ca)])
        assert unnamed.returncode != 0
        assert "--nats-tls-server-name" in unnamed.stderr

    with nats_server_with(tmp_path / "plain", "") as plain_url:
        trusting = ["--nats-url", plain_url, "--nats-tls-ca", str(tls.ca)]
        downgraded = _run_agent(tmp_path, "downgraded", trusting)
    assert downgraded.returncode != 0
    assert "does not use TLS, but --nats-tls-* options are set" in downgraded.stderr


def _async(check: Any) -> Any:
    async def run() -> Any:
        return check()

    return run


def _run_agent(
    tmp_path: Path, name: str, args: list[str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `dkron-nats agent` to completion (it is expected to refuse to start), capturing its output."""
    command = [*DKRON_NATS, "agent", "--node-name", name, "--data-dir", str(tmp_path / name)]
    command += ["--http-addr", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def test_embedded_servers_route_over_mutual_tls_with_the_password_and_refuse_a_stranger(
    tmp_path: Path,
) -> None:
    tls = TlsFiles.create(tmp_path / "tls")
    secure = ["--nats-tls-ca", str(tls.ca), "--nats-tls-cert", str(tls.cert), "--nats-tls-key", str(tls.key)]
    secure += ["--nats-user", "dkron", "--nats-password", "route-pw"]
    servers = cluster_servers(tmp_path / "cluster", secure, {})
    try:
        for server in servers:
            server.start()
        wait_for(lambda: len(leaders(servers)) == 1, 60, "one leader among three TLS-routed servers")
        wait_for(lambda: _alive(servers[0]) == {"s1", "s2", "s3"}, 30, "every server to join")
        conf = (servers[0].data_dir / "nats-server.conf").read_text()
        cluster_block = conf.split("cluster {")[1]
        assert "verify: true" in cluster_block
        assert 'user: "dkron"' in cluster_block
        route_port = int(cluster_block.split('listen: "127.0.0.1:')[1].split('"')[0])
        with _stranger_routing_to(tmp_path / "stranger", route_port):
            log = servers[0].data_dir / "nats-server.log"
            wait_for(lambda: "TLS route handshake error" in log.read_text(), 30, "the stranger's refusal")
        assert _alive(servers[1]) == {"s1", "s2", "s3"}
        assert servers[0].get("/v1/members").json()  # the cluster serves on
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def _stranger_routing_to(base: Path, route_port: int) -> Iterator[None]:
    """A plain nats-server (no TLS, no credentials) that tries to open a route to `route_port`."""
    base.mkdir(parents=True)
    conf = base / "stranger.conf"
    conf.write_text(
        f'server_name: "stranger"\nport: {free_port()}\ncluster {{ name: "dkron", listen: "127.0.0.1:'
        f'{free_port()}", routes: ["nats-route://127.0.0.1:{route_port}"] }}\n'
    )
    proc = spawn_nats_server(conf, free_port(), base / "stranger.log")
    try:
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)
