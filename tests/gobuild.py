"""Build a test's small Go program offline, in GOPATH mode, against Debian's packaged Go libraries.

The Helm renderer (`deploy/helm/render`) and the robfig oracle (`tests/oracles/robfig`) are built this way:
no module download, no network, the libraries from `golang-*-dev` packages (CI's .ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def gopath_holding(package: Path, debian_package: str, install: str) -> Path:
    """The Go source tree holding `package` (`src/github.com/...`): $GOPATH if it has it, else where
    Debian's `debian_package` put it. Fails the test with `install` (how to get it) otherwise."""
    for entry in os.environ.get("GOPATH", "").split(os.pathsep):
        if entry and (Path(entry) / package).is_dir():
            return Path(entry)
    if shutil.which("dpkg-query"):
        listed = subprocess.run(
            ["dpkg-query", "-L", debian_package], capture_output=True, text=True, check=False
        )
        suffix = "/" + package.as_posix()
        for line in listed.stdout.splitlines():
            if line.endswith(suffix):
                return Path(line.removesuffix(suffix))
    pytest.fail(f"the Go sources of {package.as_posix()} were not found: {install}")


def build(source: Path, out: Path, gopath: Path, install: str) -> Path:
    """`go build -o out source` with `gopath`, offline; fails the test with the compiler's output."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"no `go` command: {install}")
    env = os.environ | {"GO111MODULE": "off", "GOPATH": str(gopath), "GOFLAGS": "", "CGO_ENABLED": "0"}
    if not (env.get("GOCACHE") or env.get("XDG_CACHE_HOME") or env.get("HOME")):
        env["GOCACHE"] = str(out.parent / "cache")
    built = subprocess.run(
        [go, "build", "-o", str(out), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"building {source.parent.name} failed ({install}):\n{built.stderr}")
    return out
