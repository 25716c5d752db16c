"""The README's quickstart, run as written (only its two ports swapped for free ones): from a
config copied from the example to a booking made through the gateway against the simulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def quickstart_script() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart:begin -->\s*```sh\n(.*?)```\s*<!-- quickstart:end -->", text, re.S)
    assert block, "README.md has no quickstart block"
    return block.group(1)


def test_the_readme_quickstart_books_through_the_gateway(tmp_path: Path) -> None:
    script = quickstart_script()
    first_line = "make install && . .venv/bin/activate"
    assert script.startswith(first_line)
    sim_port, gateway_port = free_port(), free_port()
    script = script.replace("8099", str(sim_port)).replace("8080", str(gateway_port))
    # make install has run already: the suite runs from that .venv, so its bin/ goes on PATH
    script = script.replace(first_line, f"export PATH={Path(sys.executable).parent}:$PATH", 1)
    script = f"cp -r {ROOT / 'config'} config\n{script}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMC_", "BOOKING_"))}
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=120)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the simulator and the gateway it left running
    log = (tmp_path / "gateway.log").read_text()[-2000:] if (tmp_path / "gateway.log").exists() else ""
    assert process.returncode == 0, err.decode()[-2000:] + log
    answers = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    availability, booking = answers
    assert "2026-03-10T09:30:00Z" in availability["slots"]
    assert booking["status"] == "ok" and booking["bookingId"].startswith("bk_")
