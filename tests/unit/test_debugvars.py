"""`/debug/vars`: the command line it shows keeps no secret, and the memory figures carry Go's names."""

from __future__ import annotations

from dkron_nats.debugvars import masked_argv, memstats


def test_secret_option_values_are_masked_in_both_forms_and_flags_keep_their_neighbours() -> None:
    argv = [
        *["dkron-nats", "agent", "--auth", "--node-name", "n1", "--nats-password", "-starts-with-a-dash"],
        *["--nats-token=tok3n", "--mail-password", "m41l", "--nats-executor-url", "nats://host:4222"],
        *["--nats-url", "nats://user:p4ss@10.0.0.1:4222", "--insecure-no-auth", "--server"],
        *["--webhook-headers", "Authorization: Bearer abcdefgh12345678", "--nats-secret-file", "/etc/s"],
    ]
    assert masked_argv(argv) == [
        *["dkron-nats", "agent", "--auth", "--node-name", "n1", "--nats-password", "***"],
        *["--nats-token=***", "--mail-password", "***", "--nats-executor-url", "***"],
        *["--nats-url", "nats://user:***@10.0.0.1:4222", "--insecure-no-auth", "--server"],
        *["--webhook-headers", "Authorization: Bearer ***", "--nats-secret-file", "***"],
    ]


def test_memstats_has_go_names_with_byte_figures_that_fit_together() -> None:
    stats = memstats()
    assert set(stats) == {"Alloc", "HeapAlloc", "HeapSys", "HeapObjects", "Sys", "PeakSys", "NumGC"}
    assert stats["Alloc"] == stats["HeapAlloc"] > 0
    assert stats["PeakSys"] >= stats["Sys"] >= stats["HeapAlloc"]
    assert stats["HeapObjects"] > 0
