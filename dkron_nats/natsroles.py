"""The NATS subjects each kind of client may use: defined once, for the JWTs the embedded server's cluster
accepts (`dkron_nats/natsjwt.py`) and for the per-user blocks of `deploy/nats-secure.conf`.

- server: every dkron subject, the JetStream API and KV (it reads and writes all buckets and streams).
- agent `<node>`: what `dkron_nats/agent` uses and no more. It publishes its own results and member record,
  execution records, job locks and live output, and answers busy/cancel broadcasts; it takes run requests
  only from its own consumer of DKRON_RUNS (`run-<node>`, which servers make with the filters of its tags:
  it may pull from it and acknowledge on it, not create, change or delete any consumer of that stream), and
  receives replies in its own inbox `_INBOX.<node>.>`. It reads
  the leader lease (`dkron-leader`, to follow the leader's term) but cannot write it, and it cannot read
  the jobs, tokens, settings or audit data at all: no message get, consumer or stream info on them.
  Not narrower, because of the key layouts: execution records are `<job>.<time>-<node>` and output
  subjects `dkron.output.<job>.<time>-<node>` (the node is part of the last token, which no permission
  wildcard can match), and locks are per job; so an agent may write any execution record, output or lock.
- trigger: request `dkron.trigger.<job>` and read the replies in the inbox `_INBOX_trigger`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dkron_nats.names import is_token

ROLES = ("server", "agent", "trigger")
TRIGGER_INBOX = "_INBOX_trigger"
"""The inbox prefix trigger clients must use (`inbox_prefix="_INBOX_trigger"` in nats-py)."""


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False
    """May reply to the requests it receives (`allow_responses`), whatever their reply subject."""


def agent_inbox(node: str) -> str:
    """The inbox prefix of a node's connection (`inbox_prefix` of nats-py)."""
    return f"_INBOX.{_checked(node)}"


SERVER = Permissions(
    publish=("dkron.>", "$JS.API.>", "$KV.>", "$JS.ACK.>", "$JS.FC.>", "_INBOX.>"),
    subscribe=("dkron.>", "_INBOX.>"),
    responses=True,
)

TRIGGER = Permissions(publish=("dkron.trigger.*",), subscribe=(f"{TRIGGER_INBOX}.>",))

_AGENT_BUCKETS = ("dkron-executions", "dkron-leader", "dkron-members", "dkron-locks")
"""The buckets an agent opens (it looks up their streams)."""


def agent(node: str) -> Permissions:
    node = _checked(node)
    api = "$JS.API"
    return Permissions(
        publish=(
            f"dkron.result.{node}",
            f"dkron.result.{node}.*",  # of one partition's owner
            "dkron.output.>",
            "dkron.events.execution.started",
            "$KV.dkron-executions.>",
            f"$KV.dkron-members.{node}",
            "$KV.dkron-locks.>",
            *(f"{api}.STREAM.INFO.KV_{bucket}" for bucket in _AGENT_BUCKETS),
            *(f"{api}.STREAM.MSG.GET.KV_{bucket}" for bucket in _AGENT_BUCKETS),
            *(
                f"{api}.CONSUMER.CREATE.KV_dkron-{b}{tail}"
                for b in ("members", "leader")
                for tail in ("", ".>")
            ),
            f"{api}.CONSUMER.INFO.KV_dkron-members.*",
            f"{api}.CONSUMER.INFO.KV_dkron-leader.*",
            f"{api}.CONSUMER.MSG.NEXT.KV_dkron-members.*",
            f"{api}.CONSUMER.DELETE.KV_dkron-members.*",
            f"{api}.CONSUMER.INFO.DKRON_RUNS.run-{node}",
            f"{api}.CONSUMER.MSG.NEXT.DKRON_RUNS.run-{node}",
            f"$JS.ACK.DKRON_RUNS.run-{node}.>",
        ),
        subscribe=(
            "dkron.agent.busy",
            "dkron.agent.cancel",
            f"{agent_inbox(node)}.>",
        ),
        responses=True,
    )


def for_role(role: str, node: str = "") -> Permissions:
    """The permissions of `role` (`agent` needs the node name)."""
    if role == "server":
        return SERVER
    if role == "trigger":
        return TRIGGER
    if role == "agent":
        return agent(node)
    raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")


def _checked(node: str) -> str:
    if not is_token(node):
        raise ValueError(f"{node!r}: a node name may only contain letters, digits, '_' and '-' (max 64)")
    return node


def conf_user(user: str, permissions: Permissions) -> str:
    """One entry of `authorization { users = [...] }` in `deploy/nats-secure.conf`: `user` with its
    password from the environment variable DKRON_<USER>_PASSWORD and `permissions`."""
    pad = " " * 8
    lines = [
        "    {",
        f"      user: {user}",
        f"      password: $DKRON_{user.upper()}_PASSWORD",
        "      permissions: {",
    ]
    lines += [f"{pad}publish: [", *(f'{pad}  "{s}",' for s in permissions.publish), f"{pad}]"]
    lines.append(f"{pad}subscribe: [" + ", ".join(f'"{s}"' for s in permissions.subscribe) + "]")
    if permissions.responses:
        lines.append(f"{pad}allow_responses: true")
    return "\n".join([*lines, "      }", "    }"])
