"""End-to-end runs print their phase tables once more at the end of the session,
so a CI log (pytest -q, output captured) shows how long each phase took."""

from __future__ import annotations

from _pytest.terminal import TerminalReporter

REPORTS: list[str] = []  # appended by the lab tests: a title line, then the phase table


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("lab phase tables")
    for report in REPORTS:
        terminalreporter.write_line(report)
        terminalreporter.write_line("")
