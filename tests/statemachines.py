"""Running a Hypothesis state machine against a real nats-server: the settings every such test shares."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

REAL_SERVER = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,  # every step waits on a real server
    suppress_health_check=[HealthCheck.too_slow],
)


def run_against_real_server(machine: type[RuleBasedStateMachine]) -> None:
    run_state_machine_as_test(cast(Any, machine), settings=REAL_SERVER)
