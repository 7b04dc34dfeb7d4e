"""common.logformat: the default formatter's lines, the time rendered once a second."""

from __future__ import annotations

import logging
import time

import pytest

from common.logformat import SecondFormatter

FORMAT = "%(asctime)s %(name)s: %(message)s"


def _record(created: float, message: str = "GET /boot/x 200") -> logging.LogRecord:
    record = logging.LogRecord("netinstall.http", logging.INFO, __file__, 1, message, None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


@pytest.mark.parametrize(
    "times",
    [
        [1_765_000_000.0, 1_765_000_000.999, 1_765_000_001.0005, 1_765_000_001.5],
        [1_765_000_059.9, 1_765_000_060.1, 1_765_000_059.95],  # a minute back and forth
        [time.time() + step / 7 for step in range(30)],
    ],
)
def test_lines_are_the_default_formatters(times: list[float]) -> None:
    ours, default = SecondFormatter(FORMAT), logging.Formatter(FORMAT)
    for created in times:
        assert ours.format(_record(created)) == default.format(_record(created))


def test_the_second_is_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = time.strftime

    def counting(fmt: str, *args: time.struct_time) -> str:
        calls.append(fmt)
        return real(fmt, *args)

    monkeypatch.setattr(time, "strftime", counting)
    formatter = SecondFormatter(FORMAT)
    for step in range(10):
        formatter.format(_record(1_765_000_000 + step / 20))  # all in one second
    assert len(calls) == 1
    formatter.format(_record(1_765_000_001.2))
    assert len(calls) == 2


def test_an_explicit_date_format_is_not_cached() -> None:
    formatter = SecondFormatter(FORMAT)
    record = _record(1_765_000_000.25)
    assert formatter.formatTime(record, "%H") == logging.Formatter().formatTime(record, "%H")
