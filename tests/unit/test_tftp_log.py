"""The TFTP loop's log lines: records copied from one made once, as Logger.info would make them."""

from __future__ import annotations

import logging
import threading
import time

from pxe_server.tftp import _LineLog


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_each_line_is_a_record_of_its_own_with_its_time_and_message() -> None:
    handler = Collect()
    logger = logger_with(handler, "test.tftp.lines")
    line = _LineLog(logger)
    before = time.time()
    line("tftp %s:%d %s: %d bytes in %.2fs", "10.0.0.5", 2070, "pxelinux.0", 46_000, 0.25)
    time.sleep(0.01)
    line("tftp %s:%d %s: failed (%s)", "10.0.0.6", 2071, "vmlinuz", "no ACK")
    first, second = handler.records
    assert first is not second
    assert first.getMessage() == "tftp 10.0.0.5:2070 pxelinux.0: 46000 bytes in 0.25s"
    assert second.getMessage() == "tftp 10.0.0.6:2071 vmlinuz: failed (no ACK)"
    assert before <= first.created < second.created <= time.time()
    assert second.created - first.created >= 0.01
    assert 0 <= second.msecs < 1000
    made = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", (), None)
    assert (
        abs(made.relativeCreated - second.relativeCreated - (made.created - second.created) * 1000)
        < 1
    )
    assert (first.name, first.levelno, first.levelname) == (logger.name, logging.INFO, "INFO")
    formatted = logging.Formatter("%(asctime)s %(name)s: %(message)s").format(second)
    assert formatted.endswith("test.tftp.lines: tftp 10.0.0.6:2071 vmlinuz: failed (no ACK)")


def test_the_loggers_level_and_filters_still_apply() -> None:
    handler = Collect()
    logger = logger_with(handler, "test.tftp.quiet")
    line = _LineLog(logger)
    logger.setLevel(logging.WARNING)
    line("tftp %s: dropped", "a")
    assert handler.records == []
    logger.setLevel(logging.INFO)
    logger.addFilter(lambda record: "secret" not in record.getMessage())
    line("tftp %s: kept", "b")
    line("tftp %s: kept", "secret")
    assert [r.getMessage() for r in handler.records] == ["tftp b: kept"]


def test_the_thread_named_is_the_one_that_logs() -> None:
    handler = Collect()
    line = _LineLog(logger_with(handler, "test.tftp.thread"))
    worker = threading.Thread(target=line, args=("tftp %s", "x"), name="netinstall-tftp-test")
    worker.start()
    worker.join()
    assert handler.records[0].threadName == "netinstall-tftp-test"
