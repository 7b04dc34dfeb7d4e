"""``netinstall.build.one_build_at_a_time``: builds sharing a cache take turns."""

from __future__ import annotations

import fcntl
import io
import threading
from pathlib import Path

from images.progress import Progress
from netinstall.build import LOCK, one_build_at_a_time


def test_a_second_build_waits_for_the_first(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first_log, second_log = io.StringIO(), io.StringIO()
    first, second = Progress(stream=first_log), Progress(stream=second_log)
    entered = threading.Event()

    def later_build() -> None:
        with one_build_at_a_time(cache, second):
            entered.set()

    with one_build_at_a_time(cache, first):
        waiter = threading.Thread(target=later_build)
        waiter.start()
        assert not entered.wait(0.5), "the second build ran while the first held the cache"
        assert f"waiting for another build ({cache / LOCK} is held)" in second_log.getvalue()
    waiter.join(5)
    assert entered.is_set()
    assert "waiting" not in first_log.getvalue()


def test_the_lock_is_free_after_a_build(tmp_path: Path) -> None:
    with one_build_at_a_time(tmp_path, Progress(stream=io.StringIO())):
        pass
    with (tmp_path / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if it were still held
