"""First boot's own progress, kept so that a re-run after a power loss is safe.

``/var/lib/netinstall/firstboot-state.json`` holds the SR uuid (written before
the first command, so a re-run reuses it) and whether first boot finished;
``firstboot.done`` beside it keeps the systemd unit from starting again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import ConfigError
from .jsonfile import read_object, write_json
from .layout import Layout


@dataclass(frozen=True)
class FirstbootState:
    sr_uuid: str | None = None
    done: bool = False

    def with_sr_uuid(self, sr_uuid: str) -> FirstbootState:
        return replace(self, sr_uuid=sr_uuid)


def load_state(path: Path) -> FirstbootState:
    if not path.exists():
        return FirstbootState()
    data = read_object(path)
    sr_uuid = data.get("sr_uuid")
    done = data.get("done", False)
    if sr_uuid is not None and not isinstance(sr_uuid, str):
        raise ConfigError(f"{path}: key 'sr_uuid': expected a string or null")
    if not isinstance(done, bool):
        raise ConfigError(f"{path}: key 'done': expected true or false")
    return FirstbootState(sr_uuid=sr_uuid, done=done)


def save_state(path: Path, state: FirstbootState) -> None:
    write_json(path, asdict(state), mode=0o644)


def mark_done(layout: Layout, state: FirstbootState) -> None:
    save_state(layout.state_file, replace(state, done=True))
    layout.done_marker.write_text("first boot reported running\n", encoding="utf-8")
