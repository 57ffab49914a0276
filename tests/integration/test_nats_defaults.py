"""NATS credentials by default: the embedded nats-server of a node started with no NATS options runs in
operator mode, and each client gets only the subjects of its role (dkron_nats/natsroles.py).

Every attack is real: a nats-py client with no credentials, or with the credentials `dkron-nats
nats-credentials` mints for an agent or a trigger client, tries to read or write what it must not; then the
server's own credentials (or the API) show that nothing was read or changed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from dkron_nats.auth import BOOTSTRAP_ENV, StoredToken, token_hash
from dkron_nats.kv.buckets import AUDIT_STREAM, JOBS, LEADER, MEMBERS, RUNS_STREAM, TOKENS, cluster_partitions
from dkron_nats.kv.typed import TypedKV
from dkron_nats.leader.runconsumers import RunConsumers
from dkron_nats.members import Registry
from dkron_nats.models import Member, encode
from dkron_nats.natsroles import TRIGGER_INBOX, agent_inbox
from dkron_nats.natsserver import EmbeddedNats
from dkron_nats.subjects import Partition, decisions_subject, run_consumer, run_subject
from dkron_nats.timefmt import utcnow
from tests.cluster import wait_for_async
from tests.harness import (
    DKRON_NATS,
    Node,
    credentials_for,
    finished,
    free_port,
    job,
    running,
    shared_secret,
    wait_for,
)
from tests.integration.test_cluster import _servers as cluster_servers
from tests.integration.test_cluster import leaders

pytestmark = [pytest.mark.anyio, pytest.mark.nats]
BOOTSTRAP = secrets.token_hex(24)
AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}
MARKER = "plain-marker-7f3a9c"
"""Written into a job's command, to look for in the store files."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One server with every default but API auth (so that a forged token can be tried), and a job."""
    node = Node(tmp_path_factory.mktemp("defaults") / "n1", extra=["--auth"], env={BOOTSTRAP_ENV: BOOTSTRAP})
    with running(node):
        body = job("secret-job", command=f"echo {MARKER}", env={"DB_PASSWORD": "hunter2"})
        assert node.post("/v1/jobs", json=body, headers=AUTH).status_code == 201
        yield node


def mint(node: Node, path: Path, role: str, name: str = "") -> Path:
    """`dkron-nats nats-credentials` run against the server's data dir, as an operator would."""
    command = [*DKRON_NATS, "nats-credentials", "--role", role, "--data-dir", str(node.data_dir)]
    command += [*(["--node", name] if name else []), "--out", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    return path


@contextlib.asynccontextmanager
async def client(node: Node, creds: Path, inbox: str) -> AsyncIterator[tuple[Client, list[str]]]:
    """A nats-py client logged in with `creds`, and the errors (permission violations) the server sends."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        node.nats_url,
        user_credentials=str(creds),
        inbox_prefix=inbox,
        error_cb=on_error,
        connect_timeout=5,
        allow_reconnect=False,
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def as_server(node: Node) -> AsyncIterator[Client]:
    nc = await nats.connect(**node.nats_options(), connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


def violated(errors: list[str], *subjects: str) -> Any:
    """A check for `wait_for_async`: the server refused each subject (nats-py lower-cases it)."""

    async def check() -> bool:
        said = [e for e in errors if "permissions violation" in e]
        return all(any(f'"{s.lower()}"' in e for e in said) for s in subjects)

    return check


def unlooked(js: Any, bucket: str) -> KeyValue:
    """A handle on a bucket that was never looked up (the lookup itself is refused)."""
    return KeyValue(name=bucket, stream=f"KV_{bucket}", pre=f"$KV.{bucket}.", js=js, direct=False)


async def test_a_stranger_without_credentials_can_neither_read_jobs_nor_write_tokens(server: Node) -> None:
    forged = "dkron_" + secrets.token_urlsafe(32)
    outcome = await _stranger_attack(server, forged)

    assert outcome.startswith("refused"), outcome
    async with as_server(server) as nc:
        with pytest.raises(KeyNotFoundError):
            await (await nc.jetstream().key_value(TOKENS)).get("forged")
    listed = await anyio.to_thread.run_sync(
        lambda: server.get("/v1/tokens", headers={"Authorization": f"Bearer {forged}"})
    )
    assert listed.status_code == 401


async def _stranger_attack(server: Node, forged: str) -> str:
    """What the audit did to the previous default: read the jobs, write an admin token."""
    try:
        nc = await nats.connect(
            server.nats_url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3
        )
    except (nats.errors.Error, OSError) as exc:
        return f"refused: {exc!r}"
    try:
        js = nc.jetstream(timeout=3)
        spec = await (await js.key_value(JOBS)).get("secret-job")
        token = StoredToken(
            name="forged", role="admin", sha256=token_hash(forged), created_at=utcnow(), created_by="x"
        )
        await (await js.key_value(TOKENS)).put("forged", encode(token))
        return f"read {spec.value!r} and wrote an admin token"
    finally:
        await nc.close()


async def _make_run_consumer(admin: Client, node: str) -> None:
    member = Member(name=node, addr="", port=0, tags={}, server=False, version="test", started_at=utcnow())
    registry = Registry(TypedKV(await admin.jetstream().key_value(MEMBERS), Member), ttl=60)
    await RunConsumers(admin.jetstream(), registry, "global").make(member)


async def test_agent_credentials_reach_only_the_agents_own_subjects(server: Node, tmp_path: Path) -> None:
    creds = mint(server, tmp_path / "web1.creds", "agent", "web1")
    async with as_server(server) as admin, client(server, creds, agent_inbox("web1")) as (agent, errors):
        sjs, ajs = admin.jetstream(), agent.jetstream(timeout=1)
        lease_key = Partition(0, await cluster_partitions(sjs)).lease_key  # the leader's ("scheduler")
        lease_before = await (await sjs.key_value(LEADER)).get(lease_key)
        audit_before = (await sjs.stream_info(AUDIT_STREAM)).state.messages
        assert audit_before > 0

        # Allowed, so the credentials do work: the leader lease can be read (agents follow the term).
        seen_lease = await (await ajs.key_value(LEADER)).get(lease_key)
        assert (seen_lease.revision or 0) >= (lease_before.revision or 0)  # renewals may come in between
        assert json.loads(seen_lease.value or b"{}")["node"] == "n1"

        # Reading the jobs, the tokens and the audit log: every way is refused.
        for bucket, key in ((JOBS, "secret-job"), (TOKENS, "bootstrap")):
            with pytest.raises(nats.errors.Error):
                await ajs.key_value(bucket)
            with pytest.raises(nats.errors.Error):
                await unlooked(ajs, bucket).get(key)
        for attempt in (
            ajs.stream_info(AUDIT_STREAM),
            ajs.get_msg(AUDIT_STREAM, 1),
            ajs.purge_stream(AUDIT_STREAM),
        ):
            with pytest.raises(nats.errors.Error):
                await attempt
        await agent.subscribe("$KV.dkron-jobs.>")

        # Writing the lease, a token, another node's result; taking another node's runs.
        await agent.publish(f"$KV.{LEADER}.{lease_key}", b'{"holder":"web1"}')
        await agent.publish(f"$KV.{TOKENS}.forged", b"{}")
        await agent.publish(
            decisions_subject(0), b'{"fence":99,"cursors":{}}'
        )  # a forged scheduling decision
        forged = await admin.subscribe("dkron.result.web2")
        forged_run = await admin.subscribe(run_subject("web3"))
        probe = await admin.subscribe("dkron.output.probe.>")
        await admin.flush()  # its subscriptions are in place before the agent publishes
        # Run requests are taken from a consumer of DKRON_RUNS, which servers make for each node.
        for node in ("web1", "web2"):
            await _make_run_consumer(admin, node)
        theirs = [
            await agent.subscribe(run_subject("web2"), queue="web2"),
            await agent.subscribe(run_subject("web2")),
            await agent.subscribe(run_subject("web1")),  # even its own: only through its consumer
        ]
        stolen = await agent.subscribe(f"{agent_inbox('web1')}.stolen")
        await agent.flush()
        await agent.publish("dkron.result.web2", b"{}")
        await agent.publish(run_subject("web3"), b"a run request of its own making")
        await agent.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{RUNS_STREAM}.{run_consumer('web2')}", b"1", reply=stolen.subject
        )
        await agent.publish("dkron.output.probe.1-web1", b"after")  # allowed, published after the forgery
        await agent.flush()
        with pytest.raises(nats.errors.Error):  # a consumer of its own making, on every run subject
            await ajs.add_consumer(
                RUNS_STREAM, ConsumerConfig(durable_name="spy", filter_subject="dkron.run.>")
            )
        await sjs.publish(run_subject("web2"), b"for web2")
        await sjs.publish(run_subject("web1"), b"for web1")

        mine = await ajs.pull_subscribe_bind(run_consumer("web1"), stream=RUNS_STREAM)
        [taken] = await mine.fetch(1, timeout=5)
        assert taken.data == b"for web1"
        await taken.ack()  # allowed: acknowledging on its own consumer
        assert (await probe.next_msg(timeout=5)).data == b"after"  # one connection: in order
        assert forged.pending_msgs == 0
        assert forged_run.pending_msgs == 0
        assert [sub.pending_msgs for sub in theirs] == [0, 0, 0]
        assert stolen.pending_msgs == 0
        their_queue = await sjs.consumer_info(RUNS_STREAM, run_consumer("web2"))
        assert their_queue.num_pending == 1, "web2's run request was taken by another agent"
        await wait_for_async(
            violated(
                errors,
                f"$KV.{LEADER}.{lease_key}",
                f"$KV.{TOKENS}.forged",
                decisions_subject(0),
                "dkron.result.web2",
                run_subject("web2"),
                run_subject("web3"),
                run_subject("web1"),
                f"$JS.API.CONSUMER.MSG.NEXT.{RUNS_STREAM}.{run_consumer('web2')}",
                "$KV.dkron-jobs.>",
            ),
            10,
            "the server to refuse each attempt",
        )
        lease_after = await (await sjs.key_value(LEADER)).get(lease_key)
        held_before, held_after = (json.loads(e.value or b"{}") for e in (lease_before, lease_after))
        assert held_after["node"] == held_before["node"] == "n1"  # renewed by its holder only
        assert b"web1" not in (lease_after.value or b"")
        with pytest.raises(KeyNotFoundError):
            await (await sjs.key_value(TOKENS)).get("forged")
        assert (await sjs.stream_info(AUDIT_STREAM)).state.messages >= audit_before


async def test_trigger_credentials_trigger_a_job_and_nothing_else(server: Node, tmp_path: Path) -> None:
    creds = mint(server, tmp_path / "trigger.creds", "trigger")
    created = await anyio.to_thread.run_sync(
        lambda: server.post("/v1/jobs", json=job("by-trigger", command="echo triggered"), headers=AUTH)
    )
    assert created.status_code == 201
    async with as_server(server) as admin, client(server, creds, TRIGGER_INBOX) as (nc, errors):
        reply = await nc.request("dkron.trigger.by-trigger", b"", timeout=10)
        assert json.loads(reply.data)["status"] == "accepted"
        runs = await anyio.to_thread.run_sync(lambda: wait_for(lambda: _finished(server, "by-trigger"), 30))
        assert runs[0]["success"]

        forbidden = [
            run_subject("n1"),
            "dkron.result.n1",
            "dkron.leader.run",
            decisions_subject(0),
            f"$KV.{JOBS}.evil",
            f"$KV.{TOKENS}.evil",
        ]
        for subject in forbidden:
            await nc.publish(subject, b"{}")
        await nc.subscribe("dkron.>")
        await nc.flush()
        await wait_for_async(violated(errors, *forbidden, "dkron.>"), 10, f"violations for {forbidden}")
        sjs = admin.jetstream()
        for bucket in (JOBS, TOKENS):
            with pytest.raises(KeyNotFoundError):
                await (await sjs.key_value(bucket)).get("evil")


def _finished(server: Node, name: str) -> list[dict[str, Any]] | None:
    response = server.get(f"/v1/jobs/{name}/executions", headers=AUTH)
    response.raise_for_status()
    done = [e for e in response.json() if e["finished_at"] != "0001-01-01T00:00:00Z"]
    return done or None


def test_an_agent_joins_with_minted_credentials_and_nothing_it_or_the_server_does_is_refused(
    tmp_path: Path,
) -> None:
    server = Node(tmp_path / "server", name="s1")
    with running(server):
        creds = mint(server, tmp_path / "worker7.creds", "agent", "worker7")
        args = ["--nats-url", server.nats_url, "--nats-creds", str(creds), "--tag", "agent=worker7"]
        agent = Node(tmp_path / "worker7", name="worker7", server=False, extra=args)
        with running(agent, leader=False):
            wait_for(lambda: len(server.get("/v1/members").json()) == 2, 30, "the agent to join")
            body = job("on-worker", command="echo ran-on-worker7", tags={"agent": "worker7"})
            assert server.post("/v1/jobs", json=body).status_code == 201
            assert server.post("/v1/jobs/on-worker/run").status_code in (200, 202)
            runs = wait_for(lambda: finished(server, "on-worker", 1), 30, "the run on worker7")
    assert [(r["node_name"], r["success"]) for r in runs] == [("worker7", True)], runs[0]["output"]
    assert "ran-on-worker7" in runs[0]["output"]
    log = (server.data_dir / "nats-server.log").read_text()
    assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line][:5]
    assert "Authorization" not in log


def test_three_servers_with_one_secret_cluster_and_a_server_with_another_secret_is_refused(
    tmp_path: Path,
) -> None:
    servers = cluster_servers(tmp_path / "cluster", [], {})
    route_ports = [
        int(s.extra[s.extra.index("--nats-cluster-listen") + 1].rsplit(":", 1)[1]) for s in servers
    ]
    routes = [arg for p in route_ports for arg in ("--nats-routes", f"nats-route://127.0.0.1:{p}")]
    other_secret = shared_secret(tmp_path / "other-secret")
    outsider: Node | None = None
    try:
        for node in servers:
            node.start()
        wait_for(lambda: len(leaders(servers)) == 1, 60, "one leader among three servers")
        wait_for(lambda: _members(servers[0]) == {"s1", "s2", "s3"}, 30, "every server to register")
        conf = (servers[0].data_dir / "nats-server.conf").read_text()
        assert 'user: "dkron-route"' in conf.split("cluster {")[1]  # routes require the derived password
        # Its ports are picked now: free ports picked earlier may have become the peers' outbound ports.
        outsider = Node(
            tmp_path / "outsider",
            name="outsider",
            extra=[
                *("--nats-cluster-listen", f"127.0.0.1:{free_port()}", *routes),
                *("--nats-secret-file", str(other_secret)),
            ],
        ).start()
        wait_for(_refused(outsider, servers), 60, "the outsider's routes to be refused")
        wait_for(lambda: len(leaders(servers)) == 1, 30, "the cluster to keep one leader")
        assert _members(servers[0]) == {"s1", "s2", "s3"}  # the outsider never joined
        assert outsider.proc is not None
        assert outsider.proc.poll() is None  # still waiting for a cluster it cannot join
        with pytest.raises(httpx.ConnectError):
            outsider.get("/health")  # its API never started: it has no JetStream
    finally:
        if outsider is not None:
            outsider.stop()
        for node in servers:
            node.stop()


def _refused(outsider: Node, servers: list[Node]) -> Any:
    """A check: a peer refused the outsider's route (in the peer's log, or the outsider's own)."""

    def check() -> bool:
        if outsider.proc is not None and outsider.proc.poll() is not None:
            raise AssertionError(f"the outsider exited:\n{outsider.logs()[-3000:]}")
        peers = [s.data_dir / "nats-server.log" for s in servers]
        if any("Router connection closed: Authentication Failure" in log.read_text() for log in peers):
            return True
        own = outsider.data_dir / "nats-server.log"
        return own.exists() and "Route Error 'Authorization Violation'" in own.read_text()

    return check


def _members(server: Node) -> set[str]:
    return {m["Name"] for m in server.get("/v1/members").json()}


def test_routes_without_a_secret_file_are_refused_naming_the_flag(tmp_path: Path) -> None:
    command = [*DKRON_NATS, "agent", "--server", "--data-dir", str(tmp_path / "d"), "--nats-cluster-listen"]
    command += [f"127.0.0.1:{free_port()}", "--nats-routes", f"nats-route://127.0.0.1:{free_port()}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 2
    assert "--nats-routes needs --nats-secret-file" in done.stderr


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--nats-secret-file", "{secret}", "--nats-user", "u", "--nats-password", "p"], "choose one"),
        (["--nats-secret-file", "{missing}"], "--nats-secret-file {missing}: no such file"),
        (["--nats-url", "nats://h:4222", "--nats-secret-file", "{secret}"], "drop --nats-url"),
        (["--nats-store-cipher", "aes"], "--nats-store-key-file is missing"),
        (["--nats-store-key-file", "{secret}"], "--nats-store-cipher is missing"),
        (["--nats-store-cipher", "rot13", "--nats-store-key-file", "{secret}"], "rot13"),
    ],
)
def test_bad_embedded_nats_options_are_refused_naming_the_option(
    tmp_path: Path, options: list[str], expected: str
) -> None:
    secret = shared_secret(tmp_path / "s")
    names = {"secret": secret, "missing": tmp_path / "nope"}
    command = [*DKRON_NATS, "agent", "--data-dir", str(tmp_path / "d"), *(o.format(**names) for o in options)]
    done = subprocess.run(
        [*command, "--print-config"], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 2
    assert expected.format(**names) in done.stderr


def test_an_agent_refuses_credentials_made_for_another_node(tmp_path: Path) -> None:
    secret = shared_secret(tmp_path / "s")
    creds = credentials_for(secret, "agent", "web2")
    command = [*DKRON_NATS, "agent", "--node-name", "web1", "--nats-url", "nats://127.0.0.1:4222"]
    command += ["--nats-creds", str(creds), "--print-config"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 2
    assert "made for the agent web2, not for --node-name web1" in done.stderr
    command[command.index("web1")] = "web2"
    assert subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0


def test_cluster_routes_listen_on_loopback_unless_an_address_is_given(tmp_path: Path) -> None:
    port = free_port()
    default = EmbeddedNats(tmp_path / "a", "127.0.0.1:4222", "a", cluster_listen=f":{port}")._write_config()
    given = EmbeddedNats(
        tmp_path / "b", "127.0.0.1:4222", "b", cluster_listen=f"0.0.0.0:{port}"
    )._write_config()

    assert f'listen: "127.0.0.1:{port}"' in default.read_text().split("cluster {")[1]
    assert f'listen: "0.0.0.0:{port}"' in given.read_text().split("cluster {")[1]


def test_a_data_dir_of_the_previous_version_keeps_its_jobs_and_history(tmp_path: Path) -> None:
    """A store written without NATS authentication (account `$G`, as the previous version's embedded
    server kept it) is handed to the cluster's account on the first start with credentials."""
    data_dir = tmp_path / "node"
    old = Node(data_dir, extra=["--nats-user", "u", "--nats-password", "p"])  # also no accounts: `$G`
    with running(old):
        assert old.post("/v1/jobs", json=job("kept", command="echo before")).status_code == 201
        assert old.post("/v1/jobs/kept/run").status_code in (200, 202)
        before = wait_for(lambda: finished(old, "kept", 1), 30, "the run before the upgrade")
    assert (data_dir / "nats" / "jetstream" / "$G" / "streams" / "KV_dkron-jobs").is_dir()

    with running(Node(data_dir)) as upgraded:
        assert upgraded.get("/v1/jobs/kept").status_code == 200
        assert [e["id"] for e in finished(upgraded, "kept", 1) or []] == [before[0]["id"]]
        assert "moved the JetStream data" in upgraded.logs()
    accounts = {p.name for p in (data_dir / "nats" / "jetstream").iterdir()}
    assert "$G" not in accounts
    assert any(name.startswith("A") and len(name) == 56 for name in accounts)


def test_a_clustered_store_of_the_previous_version_is_refused_with_how_to_upgrade(tmp_path: Path) -> None:
    jetstream = tmp_path / "node" / "nats" / "jetstream"
    (jetstream / "$G" / "streams").mkdir(parents=True)
    (jetstream / "$SYS" / "_js_").mkdir(parents=True)  # the meta group of a clustered JetStream
    command = [*DKRON_NATS, "agent", "--server", "--data-dir", str(tmp_path / "node")]
    command += ["--http-addr", f"127.0.0.1:{free_port()}", "--nats-listen", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode != 0
    assert "--nats-user and --nats-password" in done.stderr
    assert (jetstream / "$G" / "streams").is_dir()  # left as it was


def _store_holds(data_dir: Path, text: str) -> bool:
    needle = text.encode()
    return any(needle in p.read_bytes() for p in (data_dir / "nats").rglob("*") if p.is_file())


def test_the_store_is_encrypted_at_rest_from_the_next_start_and_its_key_can_be_rotated(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "key1", tmp_path / "key2"
    first.write_text(secrets.token_hex(32))
    second.write_text(secrets.token_hex(32))
    data_dir = tmp_path / "node"
    with running(Node(data_dir)) as node:
        assert node.post("/v1/jobs", json=job("sealed", command=f"echo {MARKER}")).status_code == 201
    assert _store_holds(data_dir, MARKER)  # without a cipher the command is in the store as is

    cipher = ["--nats-store-cipher", "chachapoly", "--nats-store-key-file"]
    with running(Node(data_dir, extra=[*cipher, str(first)])) as node:
        assert node.get("/v1/jobs/sealed").status_code == 200  # the existing store, now encrypted
        assert node.post("/v1/jobs", json=job("environment", command="env")).status_code == 201
        assert node.post("/v1/jobs/environment/run").status_code in (200, 202)
        [run] = wait_for(lambda: finished(node, "environment", 1), 30, "the env job")
    assert not _store_holds(data_dir, MARKER)
    key = first.read_text()
    assert key not in (data_dir / "nats-server.conf").read_text()  # nats-server gets it by environment,
    assert key not in run["output"]  # which the node's jobs do not inherit

    rotate = [*cipher, str(second), "--nats-store-previous-key-file", str(first)]
    with running(Node(data_dir, extra=rotate)) as node:
        assert node.get("/v1/jobs/sealed").status_code == 200
    with running(Node(data_dir, extra=[*cipher, str(second)])) as node:
        assert MARKER in node.get("/v1/jobs/sealed").json()["executor_config"]["command"]
    assert not _store_holds(data_dir, MARKER)
