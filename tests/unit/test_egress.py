"""The egress policy of the http executor and the webhooks (`--http-allow`, `--http-deny`).

What a connection through the policy does against real servers is in test_http_executor.py and
tests/integration/test_notifications.py; here: which addresses are allowed, and the flags.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from click.testing import CliRunner

from dkron_nats.cli import main
from dkron_nats.config import ConfigError, Settings
from dkron_nats.egress import EgressDenied, EgressPolicy, parse_networks


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def policy(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> EgressPolicy:
    return EgressPolicy.from_settings(Settings(http_allow=allow, http_deny=deny))


def allowed(p: EgressPolicy, address: str) -> bool:
    return p.refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254"]
)
def test_cloud_metadata_addresses_are_refused_by_default(address: str) -> None:
    assert not allowed(policy(), address)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.1.10", "::1", "8.8.8.8", "fd00::1"])
def test_everything_else_is_allowed_by_default(address: str) -> None:
    """Jobs legitimately call internal services."""
    assert allowed(policy(), address)


def test_deny_adds_networks_and_allow_wins_over_both() -> None:
    p = policy(allow=("169.254.169.254/32", "10.0.0.5/32"), deny=("10.0.0.0/8",))
    assert allowed(p, "169.254.169.254")  # re-opened explicitly
    assert not allowed(p, "169.254.169.253")  # the rest of link-local stays closed
    assert allowed(p, "10.0.0.5")
    assert not allowed(p, "10.0.0.6")
    assert allowed(p, "11.0.0.1")


def test_the_refusal_names_the_address_the_network_and_the_way_out() -> None:
    with pytest.raises(EgressDenied) as refused:
        policy(deny=("10.0.0.0/8",)).check("db.internal", "10.2.3.4")
    assert str(refused.value) == (
        "refused to connect to db.internal (10.2.3.4): it is in 10.0.0.0/8, which --http-deny refuses; "
        "to allow it, start the node with --http-allow 10.2.3.4/32"
    )
    with pytest.raises(EgressDenied, match="--http-allow fe80::1/128"):
        policy().check("fe80::1%eth0", "fe80::1%eth0")


@pytest.mark.anyio
async def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    # localhost resolves to 127.0.0.1 (and ::1 where IPv6 is configured): one denied address is enough.
    with pytest.raises(EgressDenied, match=r"localhost \(127\.0\.0\.1\)"):
        await policy(deny=("127.0.0.0/8",)).resolve("localhost", 80)
    assert "127.0.0.1" in await policy().resolve("localhost", 80)


def test_networks_may_be_repeated_or_comma_separated() -> None:
    assert parse_networks("http-deny", ["10.0.0.0/8, 192.168.0.0/16", "fd00::/8"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [("10.0.0.1/8", "has host bits set"), ("10.0.0.0/33", "10.0.0.0/33"), ("intranet", "intranet")],
)
def test_a_bad_network_is_refused_naming_the_flag(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_networks("http-allow", [value])
    assert str(refused.value).startswith(f"--http-allow {value!r}: ")
    assert problem in str(refused.value)
    assert "CIDR" in str(refused.value)


def test_the_flags_reach_the_settings() -> None:
    args = ["agent", "--print-config", "--http-deny", "10.0.0.0/8", "--http-allow", "169.254.169.254/32"]
    result = CliRunner().invoke(main, args, env={"DKRON_NATS_HTTP_DENY": ""})
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)
    assert settings["http_deny"] == ["10.0.0.0/8"]
    assert settings["http_allow"] == ["169.254.169.254/32"]


def test_a_bad_flag_value_stops_the_node_with_the_reason() -> None:
    result = CliRunner().invoke(main, ["agent", "--print-config", "--http-deny", "10.0.0.1/8"])
    assert result.exit_code == 2
    assert "--http-deny '10.0.0.1/8': 10.0.0.1/8 has host bits set" in result.output
