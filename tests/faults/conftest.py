"""The fault suite records what it measured and prints it as one table at the end of the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "fault-figures.json"


class Figures:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, scenario: str, figure: str, value: str) -> None:
        self.rows.append((scenario, figure, value))


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(collected.rows, indent=1))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ARTIFACT.exists():
        return
    rows = json.loads(ARTIFACT.read_text())
    if not rows:
        return
    terminalreporter.section("fault-injection figures")
    width = max(len(r[0]) for r in rows)
    for scenario, figure, value in rows:
        terminalreporter.write_line(f"{scenario:<{width}}  {figure:<46} {value}")
