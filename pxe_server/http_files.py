"""HTTP, part 1: what every handler shares, and the file routes (``/boot/``, ``/repo/``,
``/files/``).

Files are served by aiohttp's ``web.FileResponse`` (sendfile, ``Range``, ``HEAD``,
``If-Modified-Since``); this module decides which file, and never one outside its root:
``..``, NUL, backslashes and absolute names are refused before the file system is
asked, and the resolved path (symlinks followed) must still lie inside the resolved root.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from common.protocol.codec import encode
from common.protocol.messages import ErrorReply
from pxe_server import decide, grub_tcp
from pxe_server.admission import UnknownGate, UnknownLimits
from pxe_server.model import Host, Profile, ServerSettings
from pxe_server.registry import Registry

T = TypeVar("T")
log = logging.getLogger("netinstall.http")

NO_NETBOOT = (
    "no netboot tree configured: run `netinstall images build`, then "
    "`netinstall server init --netboot DIR` (DIR: build/netboot)"
)
NO_REPO = (
    "no install repository configured: run `netinstall images build`, then "
    "`netinstall server init --repo DIR` (DIR: build/repo)"
)
FILES_DIR = "files"  # in the server directory: the operator's files, served at /files/
NO_FILES = "run `netinstall server init` to create it, then put the files to serve in it"


@dataclass
class Context:
    """The state of one HTTP server; ``settings`` may be replaced while it runs."""

    registry: Registry
    registry_dir: Path
    settings: ServerSettings
    netboot: Path | None
    repo: Path | None
    repo_url: str | None = None  # the repository's URL when it is not served here
    # unknown-MAC registrations (unknown_policy install): their rate, shared with TFTP
    unknown: UnknownGate = field(default_factory=lambda: UnknownGate(UnknownLimits()))
    http_boot_loader: Path | None = None  # UEFI HTTP Boot's GRUB image, if this server has one
    # With TLS on (``http_tls``): the TLS listener's base URL, e.g. https://10.0.0.1:8443;
    # operator routes are then refused on the plain port (``http_edge.caller_check``).
    operator_base: str | None = None
    # GRUB's connections (their SYN named no MSS) get whole segments (grub_tcp.py)
    segments: grub_tcp.WholeSegments = field(default_factory=grub_tcp.WholeSegments)
    # The directory of what every server of the registry serves alike (``shared_dir``):
    # None, the server directory itself.
    shared_dir: Path | None = None

    @property
    def shared(self) -> Path:
        """Where the log bundles and the operator's files are (``pxe_server.shared_dir``)."""
        return self.shared_dir or self.registry_dir

    @property
    def files(self) -> Path:
        """The operator's files (answer-file scripts, driver sources), served at ``/files/``."""
        return self.shared / FILES_DIR

    def repository_url(self) -> str:
        """The default repository's URL: ours (``<http_base>/repo/``) or the given URL."""
        return self.repo_url or f"{self.settings.http_base}/repo/"

    def repository_url_for(self, host: Host, profile: Profile) -> str:
        """The ``repo_url`` of ``host``'s answer file (``decide.repository_url``). Blocks."""
        default = self.registry.settings().get("payload_version")
        version = decide.payload_version(host, profile, default)
        registered = [r.version for r in self.registry.repositories()]
        return decide.repository_url(
            version, registered, default, self.settings.http_base, self.repository_url()
        )


CONTEXT = web.AppKey("context", Context)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


def error(status: int, message: str, **headers: str) -> web.Response:
    """A JSON error reply: ``{"protocol": 2, "error": "<one sentence>"}`` (``ErrorReply``)."""
    return web.json_response(encode(ErrorReply(message)), status=status, headers=headers or None)


async def blocking(func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``func`` (SQLite, jinja2, file writes) off the event loop, so transfers keep going.

    The Registry serialises its own calls, so its methods may run on any thread.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))


def safe_path(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it names something inside ``root``; None for any escape.

    ``relative`` is the already percent-decoded path from the URL.
    """
    if "\0" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        return None
    try:
        real_root = root.resolve(strict=True)
        candidate = real_root.joinpath(*parts).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop
        return None
    if not candidate.is_relative_to(real_root):
        return None
    return candidate


def _serve_file(
    root: Path | None, relative: str, what: str, missing_root: str
) -> web.StreamResponse:
    if root is None:
        return error(404, missing_root)
    if not root.is_dir():
        return error(404, f"the {what} directory {root} does not exist; {missing_root}")
    path = safe_path(root, relative)
    if path is None:
        return error(404, f"{relative!r} is not a file of the {what}")
    if not path.is_file():
        return error(404, f"{relative} is not in the {what} ({root})")
    return web.FileResponse(path, chunk_size=1 << 18)


async def boot_file(request: web.Request) -> web.StreamResponse:
    """``GET/HEAD /boot/<file>``: a file of the netboot tree. GRUB's connection (no MSS in
    its SYN) is first given whole segments (``grub_tcp``)."""
    ctx = context(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        outcome, mss = ctx.segments.apply(sock)
        if outcome is grub_tcp.Outcome.RAISED:
            log.debug("%s: no MSS in its SYN; segments of %d bytes", request.remote, mss)
    return _serve_file(ctx.netboot, request.match_info["path"], "netboot tree", NO_NETBOOT)


async def repo_file(request: web.Request) -> web.StreamResponse:
    """``GET/HEAD /repo/<version>/<path>``: a file of the repository registered for
    ``version``; ``/repo/<path>``: a file of the default repository."""
    ctx, relative = context(request), request.match_info["path"]
    version, slash, rest = relative.partition("/")
    if slash:
        found = await blocking(ctx.registry.repository, version)
        if found is not None:
            missing = "register it again with `netinstall server repo add DIR --replace`"
            return _serve_file(Path(found.directory), rest, f"repository {version}", missing)
    return _serve_file(ctx.repo, relative, "repository", NO_REPO)


async def operator_file(request: web.Request) -> web.StreamResponse:
    """``GET/HEAD /files/<path>``: a file of the server directory's ``files/``."""
    files = context(request).files
    return _serve_file(files, request.match_info["path"], "operator files", NO_FILES)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/boot/{path:.+}", boot_file)  # HEAD comes with GET
    app.router.add_get("/repo/{path:.+}", repo_file)
    app.router.add_get("/files/{path:.+}", operator_file)
