"""The configuration files of the dom0 services, read into typed, validated values.

``/etc/netinstall/firstboot.json`` is written by the installer (SPEC §8);
``/etc/netinstall/agent.json`` by first boot, from the server's reply to the
``running`` report. Every problem names the file and the key. Secrets are
kept out of ``repr`` so they cannot reach a log through a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.protocol.messages import SrType

from .errors import ConfigError
from .jsonfile import read_object, write_json

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DEFAULT_CHECKIN_INTERVAL = 300


@dataclass(frozen=True)
class SrConfig:
    type: SrType
    devices: tuple[str, ...]


@dataclass(frozen=True)
class FirstbootConfig:
    server: str | None  # None: installed without a netinstall server, nobody to report to
    mac: str | None
    # None once first boot has handed it in for the agent credential.
    token: str | None = field(repr=False)
    payload_version: str
    sr: SrConfig | None
    admin_interface: dict[str, Any] | None
    hostname: str | None


@dataclass(frozen=True)
class AgentConfig:
    server: str
    mac: str
    credential: str = field(repr=False)
    checkin_interval: int = DEFAULT_CHECKIN_INTERVAL


class _Reader:
    """Typed access to the keys of one JSON object, each error naming file and key."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}': {problem}")

    def optional_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "expected a non-empty string")
        return value

    def required_text(self, key: str) -> str:
        value = self.optional_text(key)
        if value is None:
            raise self.fail(key, "missing")
        return value

    def server(self, key: str) -> str:
        return self._url(key, self.required_text(key))

    def optional_server(self, key: str) -> str | None:
        value = self.optional_text(key)
        return None if value is None else self._url(key, value)

    def _url(self, key: str, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(key, f"expected an http:// or https:// URL, found {value!r}")
        return value.rstrip("/")

    def mac(self, key: str) -> str:
        return self._mac(key, self.required_text(key))

    def optional_mac(self, key: str) -> str | None:
        value = self.optional_text(key)
        return None if value is None else self._mac(key, value)

    def _mac(self, key: str, value: str) -> str:
        if not MAC_RE.fullmatch(value):
            raise self.fail(
                key, f"expected a lowercase MAC like 52:54:00:12:34:56, found {value!r}"
            )
        return value


def parse_firstboot(path: Path, data: dict[str, Any]) -> FirstbootConfig:
    r = _Reader(path, data)
    admin = data.get("admin_interface")
    if admin is not None and not isinstance(admin, dict):
        raise r.fail("admin_interface", "expected an object or null")
    return FirstbootConfig(
        server=r.optional_server("server"),
        mac=r.mac("mac") if data.get("server") is not None else r.optional_mac("mac"),
        token=r.optional_text("token"),
        payload_version=r.required_text("payload_version"),
        sr=_parse_sr(r, data.get("sr")),
        admin_interface=admin,
        hostname=r.optional_text("hostname"),
    )


def _parse_sr(r: _Reader, value: object) -> SrConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise r.fail("sr", "expected an object or null")
    kind = value.get("type")
    try:
        sr_type = SrType(str(kind))
    except ValueError:
        raise r.fail("sr.type", f"expected 'lvm' or 'ext', found {kind!r}") from None
    devices = value.get("devices")
    if not isinstance(devices, list) or not devices:
        raise r.fail("sr.devices", "expected a non-empty list of device paths")
    for device in devices:
        if not isinstance(device, str) or not device.startswith("/dev/"):
            raise r.fail("sr.devices", f"expected device paths under /dev/, found {device!r}")
    if len(set(devices)) != len(devices):
        raise r.fail("sr.devices", "a device is listed twice")
    return SrConfig(sr_type, tuple(devices))


def load_firstboot(path: Path) -> FirstbootConfig:
    return parse_firstboot(path, read_object(path))


def remove_token(path: Path) -> None:
    """Rewrite ``path`` without its install token (atomically, mode 0600)."""
    data = read_object(path)
    if "token" in data:
        del data["token"]
        write_json(path, data, mode=0o600)


def parse_agent(path: Path, data: dict[str, Any]) -> AgentConfig:
    r = _Reader(path, data)
    interval = data.get("checkin_interval", DEFAULT_CHECKIN_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise r.fail("checkin_interval", "expected a positive number of seconds")
    return AgentConfig(
        server=r.server("server"),
        mac=r.mac("mac"),
        credential=r.required_text("credential"),
        checkin_interval=interval,
    )


def load_agent(path: Path) -> AgentConfig:
    return parse_agent(path, read_object(path))


def save_agent(path: Path, config: AgentConfig) -> None:
    """Write the agent's configuration with its credential, mode 0600."""
    data = {
        "server": config.server,
        "mac": config.mac,
        "credential": config.credential,
        "checkin_interval": config.checkin_interval,
    }
    write_json(path, data, mode=0o600)
