"""A dkron-nats node: NATS connection, registry heartbeat and agent; on servers also the API and the
leader campaign. Started by `dkron-nats agent`, stopped gracefully when `stop` is set.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import msgspec
import uvicorn
from anyio.abc import TaskStatus
from litestar import Litestar
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from dkron_nats.agent.childwatch import use_pidfd_child_watcher
from dkron_nats.agent.journal import RunJournal
from dkron_nats.agent.registry import ProcessorRegistry, discover_executors, discover_processors
from dkron_nats.agent.runner import Agent
from dkron_nats.audit import AuditLog
from dkron_nats.auth import BOOTSTRAP_ENV, Authenticator, StoredToken, bootstrap_token_from_env
from dkron_nats.config import ConfigError, Settings, is_loopback_host, node_tags, redact_url
from dkron_nats.events import JOB_EVENTS, changed_job_key, job_event
from dkron_nats.failpoints import scope as scope_failpoints
from dkron_nats.failpoints import stall_point
from dkron_nats.http.agent_app import create_agent_app
from dkron_nats.http.app import create_app
from dkron_nats.http.middleware import BrowserPolicy
from dkron_nats.http.ratelimit import RateLimiter
from dkron_nats.http.render import job_json
from dkron_nats.http.server import HttpLimits, server_config
from dkron_nats.http.services import SCHEDULING_PAUSED_KEY, Flag, Services
from dkron_nats.joblist import JobLister
from dkron_nats.jobs import JobService
from dkron_nats.kv.buckets import (
    BUCKET_NAMES,
    DEFAULT_PARTITIONS,
    EXECUTIONS,
    LEADER,
    LOCKS,
    MEMBERS,
    Buckets,
    StorageLimits,
    cluster_partitions,
    ensure_buckets,
)
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.executions import ExecutionStore
from dkron_nats.kv.locks import JobLocks
from dkron_nats.kv.publisher import JsPublisher
from dkron_nats.kv.typed import LOST_REQUEST_TIMEOUT, TRANSIENT, TypedKV
from dkron_nats.leader.balance import JobsPerPartition, Planner
from dkron_nats.leader.decisions import DecisionLog, LogTails
from dkron_nats.leader.election import run_elections
from dkron_nats.leader.launcher import Launcher
from dkron_nats.leader.lease import Lease
from dkron_nats.leader.notify import Notifier, NotifySettings
from dkron_nats.leader.outcomes import NotRunRecorder
from dkron_nats.leader.partitions import Ownership, Spread, assign, live_servers
from dkron_nats.leader.placement import RaftLeadersElsewhere
from dkron_nats.leader.presence import Absences, Presence
from dkron_nats.leader.results import ResultProcessor
from dkron_nats.leader.runconsumers import RunConsumers
from dkron_nats.leader.runqueue import RunQueueGauge
from dkron_nats.leader.scheduler import Scheduler, SchedulerSettings
from dkron_nats.leader.session import LeaderSession
from dkron_nats.leader.stats import DayStats, Stats
from dkron_nats.leader.watchdog import AgentWatchdog
from dkron_nats.members import Registry, heartbeat
from dkron_nats.metrics import NATS_DISCONNECTS, NATS_RECONNECTS, NATS_TRAFFIC
from dkron_nats.models import PARTITION_PLAN_KEY, JobSpec, JobState, Member, PartitionPlan
from dkron_nats.natsauth import NatsAccessError, NatsCredentials, cluster_keys, store_key
from dkron_nats.natsjwt import ClusterKeys
from dkron_nats.natsserver import EmbeddedNats, NatsServerError, StoreEncryption, split_host_port
from dkron_nats.nextfire import NextFireCache
from dkron_nats.reload import MEMBER_SETTINGS, NOTIFICATION_SETTINGS, PROCESSOR_SETTINGS
from dkron_nats.subjects import Partition, partitions
from dkron_nats.timefmt import utcnow
from dkron_nats.triggers import TriggerIntake
from dkron_nats.version import VERSION

logger = logging.getLogger(__name__)

ServerCheck = Callable[[str, int, str], None]
"""Told the host, port and name of each NATS server the node's client (re)connects to."""


class _EmbeddedUvicorn(uvicorn.Server):
    """Uvicorn without its own signal handling: the node decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


ReloadHook = Callable[[Settings, frozenset[str]], Awaitable[None]]
"""Takes settings changed while the node runs (a SIGHUP), given them and the names of the changed fields."""


@dataclass(slots=True)
class Node:
    settings: Settings
    stop: anyio.Event
    incarnation: str = ""
    owned_partitions: Callable[[], int] = lambda: 0
    """How many partitions this server holds now (set once its leases exist)."""
    _reload_hooks: list[ReloadHook] = field(default_factory=list)

    async def apply_settings(self, settings: Settings, changed: frozenset[str]) -> None:
        """Run with `settings` from now on: reload.py changes only fields that can change while running
        (`changed` names them), and each part of the node that holds one takes it here."""
        self.settings = settings
        for hook in list(self._reload_hooks):
            await hook(settings, changed)

    def _on_reload(self, hook: ReloadHook) -> None:
        """Call `hook` on every reload for the rest of this node's run."""
        self._reload_hooks.append(hook)

    async def run(self) -> None:
        self.incarnation = uuid.uuid4().hex
        scope_failpoints(self.settings.node_name)
        use_pidfd_child_watcher()
        async with AsyncExitStack() as stack:
            s = self.settings
            urls = list(s.nats_urls)
            servers = len(urls)
            credentials = NatsCredentials.from_settings(s)
            check_server: ServerCheck | None = None
            if not urls:
                keys = None if credentials.chosen_by_operator else _cluster_keys(s)
                embedded = EmbeddedNats(
                    s.data_dir,
                    s.nats_listen,
                    s.node_name,
                    s.nats_cluster_listen,
                    s.nats_routes,
                    s.nats_cluster_name,
                    security=credentials.embedded_server(keys),
                    encryption=_store_encryption(s),
                )
                if keys is not None:  # the node logs in as a server of the cluster, like its peers
                    credentials = credentials.as_server_of(keys, s.node_name)
                await stack.enter_async_context(embedded)
                supervisor = await stack.enter_async_context(anyio.create_task_group())
                supervisor.start_soon(embedded.keep_running)
                supervisor.start_soon(embedded.refuse_strangers)
                check_server = embedded.check_server
                stack.callback(supervisor.cancel_scope.cancel)  # unwinds before the group waits
                urls, servers = [embedded.url], embedded.cluster_size
            nc = await _connect(urls, s.node_name, credentials, check_server)
            stack.push_async_callback(_close, nc)
            NATS_TRAFFIC.follow(lambda: nc.stats)  # messages per execution, in /metrics
            js = nc.jetstream(timeout=5)
            servers = max(servers, len(nc.servers))
            replicas = s.replicas or (3 if servers >= 3 else 1)
            limits = StorageLimits(
                replicas=replicas, lease_ttl=s.lease_ttl, partitions=s.partitions or DEFAULT_PARTITIONS
            )
            creates = s.server or not s.nats_urls  # with its own NATS a node has every right, as before
            buckets = await self._unless_stopped(_when_jetstream_ready(js, limits, creates))
            if buckets is None:
                logger.info("node %s stopped before JetStream was ready", s.node_name)
                return
            await self._serve(nc, buckets)

    async def _unless_stopped(self, waiting: Awaitable[Buckets]) -> Buckets | None:
        """What `waiting` returns, or None when the node is told to stop first (a SIGTERM while the NATS
        cluster is still forming must not be ignored)."""
        found: list[Buckets] = []
        async with anyio.create_task_group() as tg:

            async def stop_waiting() -> None:
                await self.stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_waiting)
            found.append(await waiting)
            tg.cancel_scope.cancel()
        return found[0] if found else None

    async def _serve(self, nc: Client, buckets: Buckets) -> None:
        s = self.settings
        js = nc.jetstream(timeout=5)
        publisher = JsPublisher(nc)  # every hot-path JetStream write of this node, pipelined
        executions = ExecutionStore(buckets.executions, js, publisher)
        members_kv = TypedKV(buckets.members, Member)
        registry = Registry(members_kv, ttl=s.member_ttl)
        grace = s.shutdown_grace.total_seconds()
        journal = RunJournal(s.data_dir / "running")
        executors = discover_executors()
        executors.configure(s)
        processors = discover_processors()
        processors.configure(s)
        self._on_reload(functools.partial(_reconfigure_processors, processors))
        locks = JobLocks(buckets.locks, js, ttl=s.member_ttl)
        agent = Agent(
            nc,
            js,
            s.node_name,
            executions,
            executors,
            grace,
            buckets.leader,
            journal,
            locks,
            processors=processors,
            env_passthrough=s.job_env_passthrough,
            publisher=publisher,
            max_concurrent_executions=s.max_concurrent_executions,
            tags=lambda: node_tags(self.settings),
        )
        # What a previous process of this node left running (nothing after a graceful stop).
        previous = await members_kv.get(s.node_name)
        leftover = sorted({*journal.keys(), *(previous[0].running if previous else [])})
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)  # ends with the group, after the agent has drained
            await tg.start(registry.run)
            if leftover:
                tg.start_soon(agent.conclude_previous_process, leftover)
            me = self._member()

            def beat() -> Member:  # the tags of now: a reload may have changed them
                tags = node_tags(self.settings)
                return msgspec.structs.replace(
                    me,
                    tags=tags,
                    running=agent.running_keys(),
                    executions_running=agent.slots.used,
                    executions_queued=agent.slots.queued,
                    partitions=self.owned_partitions(),
                    leaving=self.stop.is_set() and s.server,
                )

            # The agent follows the lease and waits for its consumer of run requests before its member
            # record appears; the leader makes the consumer from that record, then targets the node.
            agent_done = anyio.Event()
            await tg.start(_run_then_set, agent, agent_done)
            await tg.start(
                functools.partial(heartbeat, members_kv, beat, s.member_ttl / 4, early=agent.listed)
            )
            stall_point("after-first-heartbeat")  # a test checks that a visible node is listening
            self._on_reload(functools.partial(_publish_member, members_kv, beat))
            server_scope = anyio.CancelScope()
            if s.server:
                tg.start_soon(
                    self._run_server, server_scope, nc, buckets, executions, registry, agent, publisher
                )
            elif s.http_addr:  # an agent's /health and /metrics, when asked for
                tg.start_soon(_serve_agent_http, nc, s)
            logger.info("node %s started (%s)", s.node_name, "server" if s.server else "agent")
            await self.stop.wait()
            logger.info("node %s stopping", s.node_name)
            if s.server:  # first say so: the partitions it is about to release go elsewhere at once
                await _say_leaving(members_kv, beat())
            server_scope.cancel()
            agent.stop()
            await agent_done.wait()
            tg.cancel_scope.cancel()

    def _member(self) -> Member:
        s = self.settings
        # An agent without --http-addr listens nowhere: port 0.
        host, port = split_host_port(s.http_addr, default_host="0.0.0.0") if s.http_addr else ("", 0)
        return Member(
            name=s.node_name,
            addr=host if host not in ("0.0.0.0", "") else "127.0.0.1",
            port=port,
            tags=node_tags(s),
            server=s.server,
            version=VERSION,
            started_at=utcnow(),
            max_concurrent_executions=s.max_concurrent_executions,
        )

    async def _run_server(
        self,
        scope: anyio.CancelScope,
        nc: Client,
        buckets: Buckets,
        executions: ExecutionStore,
        registry: Registry,
        agent: Agent,
        publisher: JsPublisher,
    ) -> None:
        s = self.settings
        js = nc.jetstream(timeout=5)
        jobs_cache = KVCache(TypedKV(buckets.jobs, JobSpec))
        states_cache = KVCache(TypedKV(buckets.job_state, JobState, publisher))
        settings_cache = KVCache(TypedKV(buckets.settings, Flag))
        plans = KVCache(TypedKV(buckets.settings, PartitionPlan))  # the one key of that shape there

        def plan() -> PartitionPlan | None:
            return plans.get(PARTITION_PLAN_KEY)

        def assignees() -> dict[int, str]:
            return assign(len(parts), live_servers(registry, s.node_name), plan()) if len(parts) > 1 else {}

        parts = partitions(await cluster_partitions(js))
        if s.partitions is not None and len(parts) != s.partitions:
            logger.warning(
                "--partitions %d is ignored: this cluster was created with %d partitions",
                s.partitions,
                len(parts),
            )
        leases = [
            Lease(buckets.leader, s.node_name, self.incarnation, s.lease_ttl, key=part.lease_key)
            for part in parts
        ]
        self.owned_partitions = lambda: sum(lease.valid() for lease in leases)
        stats = Stats(TypedKV(buckets.stats, DayStats))
        tokens_cache = KVCache(TypedKV(buckets.tokens, StoredToken))
        auth = Authenticator(tokens_cache, enabled=s.auth, bootstrap=bootstrap_token_from_env())
        with scope:
            async with anyio.create_task_group() as tg:
                await tg.start(jobs_cache.run)
                await tg.start(states_cache.run)
                await tg.start(settings_cache.run)
                await tg.start(plans.run)
                await tg.start(tokens_cache.run)
                _warn_about_api_access(s, auth)
                flag = settings_cache

                def paused() -> bool:
                    return bool((f := flag.get("paused")) and f.value)

                async def announce(event: str, spec: JobSpec) -> None:
                    data = None if event == "deleted" else job_json(jobs.view(spec), nexts.get(spec))
                    await nc.publish(*job_event(event, spec.name, data))

                audit_log = AuditLog(js)
                jobs = JobService(jobs_cache, states_cache, paused, announce, audit_log, len(parts))
                tg.start_soon(_follow_job_notices, nc, jobs_cache)
                nexts = NextFireCache()
                jobs_per_partition = JobsPerPartition(len(parts))
                jobs_per_partition.follow(jobs_cache)  # for as long as this server runs
                services = Services(
                    node_name=s.node_name,
                    version=VERSION,
                    tags=node_tags(s),
                    nc=nc,
                    jobs=jobs,
                    lister=JobLister(jobs, nexts),
                    nexts=nexts,
                    executions=executions,
                    registry=registry,
                    lease=leases[0],
                    partitions=len(parts),
                    settings=settings_cache,
                    stats=stats,
                    executors=agent.executors,
                    processors=agent.processors,
                    request_shutdown=self.stop.set,
                    auth=auth,
                    audit=audit_log,
                    jobs_per_partition=jobs_per_partition,
                    max_body_bytes=s.max_body_size,
                    max_executions=s.max_executions,
                    assignees=lambda: (
                        assign(len(parts), live_servers(registry, s.node_name), plan())
                        if len(parts) > 1
                        else {}
                    ),
                )
                locks = JobLocks(buckets.locks, js, ttl=s.member_ttl)
                notifier = Notifier(NotifySettings.from_settings(s), executions)
                self._on_reload(functools.partial(_reconfigure_server, services, notifier))
                consumers = RunConsumers(js, registry, s.region)
                tg.start_soon(consumers.follow)  # warm: a takeover need not make them before it schedules
                lost_js = nc.jetstream(timeout=LOST_REQUEST_TIMEOUT)
                tails = LogTails(lost_js, len(parts))
                tg.start_soon(tails.follow)  # warm: a takeover reads only the last appends
                await tg.start(notifier.run)  # sends what this server's partitions report
                tg.start_soon(stats.run)
                not_run = NotRunRecorder(nc, executions, s.max_executions)
                run_queue = RunQueueGauge(nc)
                planner = Planner(plans, registry, s.node_name, jobs_per_partition)
                launchers = [
                    Launcher(
                        nc,
                        js,
                        registry,
                        executions,
                        lease,
                        s.region,
                        locks,
                        notifier=notifier,
                        not_run=not_run,
                        consumers=consumers,
                        partition=part,
                        run_queue=run_queue,
                    )
                    for part, lease in zip(parts, leases, strict=True)
                ]

                async def lead(part: Partition) -> None:
                    launcher = launchers[part.index]
                    scheduler = Scheduler(
                        jobs_cache,
                        DecisionLog(
                            js,
                            publisher,
                            ensure_leader=launcher.ensure_leader,
                            is_live=lambda key: jobs_cache.get(key) is not None,
                            partition=part.index,
                            tail=tails[part.index],
                        ),
                        launcher,
                        SchedulerSettings(starting_deadline=s.starting_deadline),
                        paused=lambda: services.is_paused(SCHEDULING_PAUSED_KEY),
                    )
                    results = ResultProcessor(
                        js, jobs, executions, launcher, s.max_executions, stats, notifier=notifier
                    )
                    watchdog = AgentWatchdog(registry, launcher)
                    unlisten = settings_cache.listen(lambda key, flag: scheduler.wake())
                    chores = part.index == 0  # the cluster-wide ones, done by "the leader"
                    # The embedded nats-server is named after the node (natsserver.EmbeddedNats).
                    placement = (
                        RaftLeadersElsewhere(nc, js, s.node_name) if chores and not s.nats_urls else None
                    )
                    session = LeaderSession(
                        nc,
                        jobs,
                        launcher,
                        scheduler,
                        results,
                        watchdog,
                        placement=placement,
                        planner=planner if chores and len(parts) > 1 else None,
                        chores=chores,
                    )
                    try:
                        await session.run()
                    finally:
                        unlisten()

                def ownership(part: Partition) -> Ownership:
                    if not part.split:
                        return Ownership()
                    return Spread(part, s.node_name, registry, plan=plan)

                tg.start_soon(_serve_http, services, s)
                await tg.start(TriggerIntake(nc, js, jobs, audit_log, len(parts)).run)
                await tg.start(Presence(nc, s.node_name, self.incarnation).serve)
                absences = Absences(nc)
                async with anyio.create_task_group() as campaigns:
                    for part, lease in zip(parts, leases, strict=True):
                        campaigns.start_soon(
                            functools.partial(
                                run_elections,
                                lease,
                                functools.partial(lead, part),
                                absences=absences,
                                on_gone=registry.confirm_gone,
                                ownership=ownership(part),
                            )
                        )


async def _publish_member(
    store: TypedKV[Member], member: Callable[[], Member], settings: Settings, changed: frozenset[str]
) -> None:
    """New tags go into the member record at once: job targeting follows without waiting for a heartbeat."""
    if not changed & MEMBER_SETTINGS:
        return
    record = member()
    with anyio.move_on_after(5):
        try:
            await store.put(record.name, record)
            return
        except TRANSIENT:
            pass
    logger.warning("the new tags could not be published now (NATS unavailable); the next heartbeat will")


async def _say_leaving(store: TypedKV[Member], record: Member) -> None:
    """Mark this server's member record as leaving; not for long if NATS does not answer (it is stopping)."""
    with anyio.move_on_after(1), contextlib.suppress(*TRANSIENT):
        await store.put(record.name, record)


async def _reconfigure_processors(
    processors: ProcessorRegistry, settings: Settings, changed: frozenset[str]
) -> None:
    """The processors' settings (the files processor's root) apply from the next execution on."""
    if changed & PROCESSOR_SETTINGS:
        processors.configure(settings)


async def _reconfigure_server(
    services: Services, notifier: Notifier, settings: Settings, changed: frozenset[str]
) -> None:
    """A server's part of a reload: its tags in `GET /v1`, the leader's mail and webhooks."""
    services.tags = node_tags(settings)
    if changed & NOTIFICATION_SETTINGS:
        notifier.settings = NotifySettings.from_settings(settings)


def _cluster_keys(s: Settings) -> ClusterKeys:
    try:
        return cluster_keys(s.data_dir, s.nats_secret_file)
    except ConfigError as exc:
        raise NatsServerError(str(exc)) from None


def _store_encryption(s: Settings) -> StoreEncryption | None:
    if not s.nats_store_cipher or s.nats_store_key_file is None:
        return None
    previous = s.nats_store_previous_key_file
    return StoreEncryption(
        s.nats_store_cipher, store_key(s.nats_store_key_file), store_key(previous) if previous else ""
    )


AGENT_BUCKETS = (EXECUTIONS, LEADER, MEMBERS, LOCKS)
"""The buckets an agent uses; NATS credentials of an agent allow it to open no other."""


async def _agent_buckets(js: JetStreamContext) -> Buckets:
    """The buckets of an agent: those it uses are opened (they must exist: servers create them), the
    others are handles that were never looked up, since an agent may not even see their streams."""
    opened = {name: await js.key_value(name) for name in AGENT_BUCKETS}

    def handle(name: str) -> KeyValue:
        if name in opened:
            return opened[name]
        return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=js, direct=False)

    return Buckets(*(handle(name) for name in BUCKET_NAMES))


async def _when_jetstream_ready(js: JetStreamContext, limits: StorageLimits, create: bool) -> Buckets:
    """Create the buckets (a server) or open those an agent uses, waiting while a JetStream cluster is still
    forming (no meta leader yet) or, for an agent, until a server has created them."""
    delay = 0.5
    while True:
        try:
            return await ensure_buckets(js, limits) if create else await _agent_buckets(js)
        except (*TRANSIENT, APIError) as exc:
            logger.warning("JetStream is not ready (%s); is the NATS cluster still forming? retrying", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _follow_job_notices(nc: Client, cache: KVCache[JobSpec]) -> None:
    """Re-read a job as soon as any server announces a change to it."""
    sub = await nc.subscribe(JOB_EVENTS)
    try:
        async for msg in sub.messages:
            key = changed_job_key(msg.data)
            if key is None:
                logger.warning("ignoring a job event that names no job: %r", msg.data[:80])
                continue
            try:
                await cache.refresh(key)
            except TRANSIENT as exc:  # the watch will still deliver it
                logger.warning("could not refresh job %r after a change notice: %s", msg.data, exc)
    finally:
        with anyio.move_on_after(2, shield=True):
            await sub.unsubscribe()


async def _run_then_set(
    agent: Agent, done: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    try:
        await agent.run(task_status=task_status)
    finally:
        done.set()


def _warn_about_api_access(settings: Settings, auth: Authenticator) -> None:
    """Say at start-up when the API lets in more than it should (only --insecure-no-auth gets this far)."""
    host, _ = split_host_port(settings.http_addr, default_host="0.0.0.0")
    if not settings.auth and not is_loopback_host(host):
        logger.warning(
            "SECURITY: --insecure-no-auth: the API on %s has authentication off, and anyone who can reach "
            "this port can create jobs that run commands on every node. Turn it on with --auth (env "
            "DKRON_NATS_AUTH=true, config key auth: true) and %s for the first admin token, or listen on "
            "loopback only (--http-addr 127.0.0.1:8080).",
            settings.http_addr,
            BOOTSTRAP_ENV,
        )
    elif settings.auth and not auth.has_admin():
        logger.warning(
            "authentication is on but there is no admin token yet, so nobody can create one: set %s "
            "on this server (then `dkron-nats token create NAME --role admin` with it)",
            BOOTSTRAP_ENV,
        )


class HttpBindError(RuntimeError):
    pass


async def _serve_http(services: Services, s: Settings) -> None:
    """Serve the API until cancelled."""
    host, _ = split_host_port(s.http_addr, default_host="0.0.0.0")
    app = create_app(
        services,
        BrowserPolicy.of(s.cors_origins, s.allowed_hosts, host),
        RateLimiter(s.rate_limit_runs, s.rate_limit_burst),
    )
    await _serve_asgi(app, s, "the API")


async def _serve_agent_http(nc: Client, s: Settings) -> None:
    """Serve an agent's /health, /metrics and /debug/vars until cancelled."""
    host, _ = split_host_port(s.http_addr, default_host="0.0.0.0")
    app = create_agent_app(s.node_name, lambda: nc.is_connected, BrowserPolicy.of((), s.allowed_hosts, host))
    await _serve_asgi(app, s, "the agent's /health and /metrics")


async def _serve_asgi(app: Litestar, s: Settings, what: str) -> None:
    """Serve `app` on --http-addr until cancelled; then let uvicorn finish in-flight requests (bounded)."""
    addr = s.http_addr
    host, port = split_host_port(addr, default_host="0.0.0.0")
    limits = HttpLimits(s.http_header_timeout.total_seconds(), s.http_max_connections)
    server = _EmbeddedUvicorn(server_config(app, host, port, limits))

    async def exit_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(exit_when_cancelled)
        with anyio.CancelScope(shield=True):
            try:
                await server.serve()
            except SystemExit:
                raise HttpBindError(
                    f"cannot serve {what} on {addr}: is the port in use? (--http-addr)"
                ) from None
        tg.cancel_scope.cancel()


async def _connect(
    urls: list[str], node: str, credentials: NatsCredentials, check_server: ServerCheck | None = None
) -> Client:
    """Connect, retrying while NATS is unreachable; refused credentials or TLS end start-up at once.

    Replies come to `_INBOX.<node>.>`, so NATS permissions can give each node its own inbox only.
    `check_server` sees each server the client (re)connects to (the embedded server refuses strangers).
    """
    connected = False
    where = ", ".join(redact_url(url) for url in urls)

    async def on_error(exc: Exception) -> None:
        if not connected and (reason := credentials.explain_refusal(exc)):
            logger.error("cannot connect to NATS at %s: %s", where, reason)
            raise NatsAccessError(f"cannot connect to NATS at {where}: {reason}")  # ends nats-py's retries
        logger.warning("NATS: %s", exc)

    async def on_disconnect() -> None:
        NATS_DISCONNECTS.inc()
        logger.info("NATS disconnected (reconnecting unless this node is stopping)")

    def check(client: Client) -> None:
        url = client.connected_url
        if check_server is not None and url is not None and url.hostname and url.port:
            check_server(url.hostname, url.port, str(client._server_info.get("server_name", "")))

    async def on_reconnect() -> None:
        NATS_RECONNECTS.inc()
        logger.info("NATS connection re-established")
        check(client)

    client = Client()
    try:
        await client.connect(
            servers=urls,
            name=f"dkron-nats {node}",
            inbox_prefix=f"_INBOX.{node}",
            ping_interval=5,
            max_outstanding_pings=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int, but only ever slept on
            connect_timeout=5,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            **credentials.connect_options(),
        )
    except NatsAccessError:
        await _abandon(client)
        raise
    connected = True
    check(client)
    if credentials.tls_enabled and not client._server_info.get("tls_required"):
        await _abandon(client)  # TLS options given, yet the server speaks plain text: someone in between?
        raise NatsAccessError(
            f"the NATS server at {where} does not use TLS, but --nats-tls-* options are set: "
            "enable TLS on it, or drop the options"
        )
    return client


async def _abandon(client: Client) -> None:
    with anyio.move_on_after(2, shield=True), contextlib.suppress(Exception):
        await client.close()


async def _close(nc: Client) -> None:
    with anyio.move_on_after(5, shield=True):
        try:
            await nc.drain()
        except Exception:  # noqa: BLE001 - the servers may be gone already; closing is all that is left
            with contextlib.suppress(Exception):
                await nc.close()
