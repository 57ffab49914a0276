"""What `GET /debug/vars` shows, as Go's expvar does for Dkron: the command line and memory figures.

`cmdline` is this process's real command line (`sys.orig_argv`, like /proc/self/cmdline) with its secrets
as `***`: the value of every option whose name looks secret (`--nats-password`, `--nats-token`,
`--mail-password`, the key and secret file options) or that `config.SECRET_SETTINGS` names
(`--nats-executor-url`), in both the `--name value` and `--name=value` forms, and whatever `secrets.mask_text`
recognises in any other argument (a URL's password, a bearer token, a secret-named `name=value`).

`memstats` keeps the names of Go's `runtime.MemStats` where CPython has a cheap equivalent (nothing here walks
the heap or needs tracemalloc), all read from /proc/self/status on Linux:
`Alloc` and `HeapAlloc` = resident anonymous memory (the interpreter's heap and object arenas, thread stacks),
`HeapSys` = the data segment's size (VmData), `Sys` = the resident set size (VmRSS), `PeakSys` = its peak
(VmHWM), `HeapObjects` = the memory blocks the interpreter has allocated (`sys.getallocatedblocks`), `NumGC` =
collections of the garbage collector, all generations (`gc.get_stats`). Without /proc (not Linux) every byte
figure is the peak resident size from `getrusage`.
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dkron_nats.config import SECRET_SETTINGS
from dkron_nats.secrets import MASK, is_secret_key, mask_text

SECRET_OPTIONS = frozenset("--" + name.replace("_", "-") for name in SECRET_SETTINGS)
FLAGS_NAMED_LIKE_SECRETS = frozenset({"--auth", "--insecure-no-auth"})
"""Options with a secret word in their name that take no value: the argument after them is not theirs."""
_STATUS_FIELDS = {"RssAnon": "HeapAlloc", "VmData": "HeapSys", "VmRSS": "Sys", "VmHWM": "PeakSys"}


def debug_vars() -> dict[str, Any]:
    return {"cmdline": masked_argv(sys.orig_argv), "memstats": memstats()}


def masked_argv(argv: Sequence[str]) -> list[str]:
    """`argv` with the values of secret options, and the secrets other arguments show, as `***`."""
    shown: list[str] = []
    value_is_secret = False
    for arg in argv:
        if value_is_secret:
            shown.append(MASK)
            value_is_secret = False
            continue
        name, equals, value = arg.partition("=")
        if _is_secret_option(name):
            shown.append(f"{name}={MASK}" if equals and value else arg)
            value_is_secret = not equals and name not in FLAGS_NAMED_LIKE_SECRETS
            continue
        shown.append(mask_text(arg))
    return shown


def _is_secret_option(name: str) -> bool:
    return name.startswith("--") and (name in SECRET_OPTIONS or is_secret_key(name[2:]))


def memstats() -> dict[str, int]:
    memory = _proc_status_bytes() or _peak_rss_only()
    return {
        "Alloc": memory["HeapAlloc"],
        "HeapAlloc": memory["HeapAlloc"],
        "HeapSys": memory["HeapSys"],
        "HeapObjects": sys.getallocatedblocks(),
        "Sys": memory["Sys"],
        "PeakSys": memory["PeakSys"],
        "NumGC": sum(generation["collections"] for generation in gc.get_stats()),
    }


def _proc_status_bytes() -> dict[str, int]:
    """The `_STATUS_FIELDS` of /proc/self/status in bytes (it writes them in kB); {} without it."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in lines:
        field, _, rest = line.partition(":")
        if field in _STATUS_FIELDS and rest.split():
            found[_STATUS_FIELDS[field]] = int(rest.split()[0]) * 1024
    return found if len(found) == len(_STATUS_FIELDS) else {}


def _peak_rss_only() -> dict[str, int]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return dict.fromkeys(_STATUS_FIELDS.values(), peak)
