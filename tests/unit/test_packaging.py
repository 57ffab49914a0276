"""The wheel pip users install carries the built web UI (`make wheel`; `make test` builds the UI first)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_contains_the_built_ui(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("dkron_nats-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dkron_nats/ui_dist/index.html" in names, "build the UI first (make ui)"
    assert any(n.startswith("dkron_nats/ui_dist/assets/") and n.endswith(".js") for n in names)
    assert "dkron_nats/py.typed" in names
