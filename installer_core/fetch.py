"""Read what a URL names: answer files, scripts, ``.treeinfo`` and payload files (SPEC §4).

Schemes: http(s) (requests), ftp (urllib, ``user:pass@`` allowed), ``file:///path``
and ``nfs://server:/dir/file`` or ``nfs://server/dir/file`` (the directory is
mounted read-only for the read, then unmounted). Transient failures are retried
with exponential backoff; the final ``SourceError`` names the URL and the last
error with passwords and ``token=`` values redacted.

What is read into memory (``fetch_bytes``, ``fetch_text``) is bounded: at most
``limit`` bytes after an HTTP ``Content-Encoding`` is undone (``TEXT_LIMIT``, the
answer file ``answerfile.limits.MAX_BYTES``), inflated here chunk by chunk so a
small gzip body cannot grow past the limit in memory; read as it arrives (what
one receive brings), each read within ``Transport.timeout`` and the whole body
within ``Transport.deadline``. Files (``fetch_file``) stream to disk.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import requests
import urllib3

import answerfile
from answerfile import limits
from answerfile.bootargs import BootArgs, redact_url
from answerfile.model import AnswerFile, Source, SourceType
from common.errors import CommandError, InputError, NetinstallError, SourceError
from common.process import CommandRunner, run

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_TRANSIENT_HTTP = (408, 429)
T = TypeVar("T")
GENERATOR_TIMEOUT = 600  # seconds
TEXT_LIMIT = 16 << 20  # bytes: anything else read into memory whole (scripts, .treeinfo, packs)
BODY_DEADLINE = 120.0  # seconds for a whole in-memory read, however slowly it trickles
READ_SIZE = 64 << 10  # the most one read asks for
_PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")  # a repository URL's pin of its .treeinfo


@dataclass
class Transport:
    """How fetches reach the outside: each part is replaced in tests."""

    session: requests.Session = field(default_factory=requests.Session)
    runner: CommandRunner = run
    sleep: Callable[[float], None] = time.sleep
    urlopen: Callable[..., Any] = urllib.request.urlopen
    mount_base: Path = Path("/run")  # nfs mounts go to <mount_base>/netinstall-nfs-N
    timeout: float = 30.0  # seconds per connection attempt / read
    deadline: float = BODY_DEADLINE  # seconds for a whole in-memory read (fetch_bytes)
    clock: Callable[[], float] = time.monotonic


class Permanent(NetinstallError):
    """A failure that retrying cannot cure (404, a missing local file)."""


TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    CommandError,
    SourceError,
)


def describe(exc: BaseException | None) -> str:
    """An error as one redacted phrase."""
    return redact_url(str(exc) or type(exc).__name__)


def with_retries(
    url: str, attempt: Callable[[], T], *, retries: int, backoff: float, transport: Transport
) -> T:
    """``attempt()`` up to ``retries`` times, sleeping backoff, 2*backoff, ... in between."""
    last: BaseException | None = None
    tries = 0
    while tries < max(1, retries):
        if tries:
            delay = backoff * 2 ** (tries - 1)
            log.info("retrying %s in %.1f s", redact_url(url), delay)
            transport.sleep(delay)
        tries += 1
        try:
            return attempt()
        except Permanent as exc:
            last = exc
            break
        except TRANSIENT as exc:
            last = exc
            log.warning("reading %s failed: %s", redact_url(url), describe(exc))
    count = "1 attempt" if tries == 1 else f"{tries} attempts"
    raise SourceError(f"cannot read {redact_url(url)} ({count}): {describe(last)}") from last


def fetch_bytes(
    url: str,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    transport: Transport | None = None,
    limit: int = TEXT_LIMIT,
) -> bytes:
    """The whole content of ``url``: at most ``limit`` bytes, within the transport's deadline."""
    io = transport or Transport()
    return with_retries(
        url, lambda: _read(url, io, limit), retries=retries, backoff=backoff, transport=io
    )


def fetch_text(
    url: str,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    transport: Transport | None = None,
    limit: int = TEXT_LIMIT,
) -> str:
    """The content of ``url`` as UTF-8 text (at most ``limit`` bytes)."""
    data = fetch_bytes(url, retries=retries, backoff=backoff, transport=transport, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{redact_url(url)} is not UTF-8 text: {exc}") from exc


def fetch_file(
    url: str,
    dest: Path,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    transport: Transport | None = None,
) -> None:
    """Copy ``url`` to ``dest`` (any scheme; streamed, never held in memory whole)."""
    io = transport or Transport()

    def attempt() -> None:
        with _open(url, io) as stream, dest.open("wb") as out:
            shutil.copyfileobj(stream, out, CHUNK)

    with_retries(url, attempt, retries=retries, backoff=backoff, transport=io)


IDENTITY = {"Accept-Encoding": "identity"}  # files are checksummed as stored: no gzip on the way
COMPRESSED = {"Accept-Encoding": "gzip, deflate"}  # text: inflated here, within the limit


class TooLarge(Permanent):
    """A body past the limit of what is read into memory: not retried."""


class TooSlow(Permanent):
    """A body still arriving at the deadline: a server that trickles is not waited for again."""


def _read(url: str, io: Transport, limit: int) -> bytes:
    """One try of ``fetch_bytes``: the body, bounded (see the module docstring)."""
    started = io.clock()
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        with _open(url, io) as stream:
            return _bounded(_reader(stream), _Inflater(""), limit, io, started)
    with io.session.get(url, headers=COMPRESSED, timeout=io.timeout, stream=True) as response:
        check_status(response)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        length = response.headers.get("Content-Length", "")
        identity = encoding in ("", "identity")
        if identity and length.isdigit() and int(length) > limit:
            raise TooLarge(f"the server announces {length} bytes; at most {limit} are read here")
        response.raw.decode_content = False
        body = _bounded(_reader(response.raw), _Inflater(encoding), limit, io, started)
        if identity and length.isdigit() and len(body) != int(length):
            raise SourceError(f"the connection closed after {len(body)} of {length} bytes")
        return body


def _reader(stream: Any) -> Callable[[int], bytes]:
    """``read1`` of ``stream``: what one receive brought, so a trickle cannot hold a read
    for ever (urllib3 1.x, Debian's, has no ``read1``; the http.client response it wraps has)."""
    for candidate in (stream, getattr(stream, "_fp", None)):
        read1 = getattr(candidate, "read1", None)
        if callable(read1):
            return cast(Callable[[int], bytes], read1)
    return cast(Callable[[int], bytes], stream.read)


class _Inflater:
    """Undoes a Content-Encoding chunk by chunk, never past what the limit leaves room for."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding in ("", "identity"):
            self.zlib = None
        elif encoding in ("gzip", "x-gzip"):
            self.zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.zlib = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped (RFC 9110 8.4.1.2)
        else:
            raise Permanent(f"the server sent Content-Encoding {encoding!r}; expected gzip")

    def feed(self, data: bytes, room: int) -> bytes:
        """``data`` inflated: at most ``room + 1`` bytes (one more than fits says enough)."""
        if self.zlib is None:
            return data
        try:
            return self.zlib.decompress(data, room + 1)
        except zlib.error as exc:
            raise SourceError(f"the {self.encoding} body does not inflate: {exc}") from exc

    def end(self) -> bytes:
        if self.zlib is None:
            return b""
        if not self.zlib.eof:
            raise SourceError(f"the {self.encoding} body ends early")
        return self.zlib.flush()


def _bounded(
    read1: Callable[[int], bytes], inflater: _Inflater, limit: int, io: Transport, started: float
) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        if io.clock() - started > io.deadline:
            raise TooSlow(f"still arriving after {io.deadline:g} s (got {size} bytes)")
        data = read1(READ_SIZE)
        more = inflater.feed(data, limit - size) if data else inflater.end()
        size += len(more)
        if size > limit:
            inflated = f" once its {inflater.encoding} is undone" if inflater.zlib else ""
            raise TooLarge(
                f"the body is larger than {limit} bytes{inflated}; at most {limit} are read here"
            )
        parts.append(more)
        if not data:
            return b"".join(parts)


@contextmanager
def _open(url: str, io: Transport) -> Iterator[IO[bytes]]:
    """A byte stream of ``url``, as stored (no HTTP Content-Encoding)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        with io.session.get(url, headers=IDENTITY, timeout=io.timeout, stream=True) as response:
            check_status(response)
            response.raw.decode_content = False
            yield cast(IO[bytes], response.raw)
    elif scheme == "ftp":
        with io.urlopen(url, timeout=io.timeout) as stream:
            yield stream
    elif scheme == "file":
        path = Path(unquote(urlsplit(url).path))
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise Permanent(f"{path}: {exc.strerror}") from exc
        with stream:
            yield stream
    elif scheme == "nfs":
        with nfs_file(url, io) as path, path.open("rb") as stream:
            yield stream
    else:
        raise Permanent(f"unsupported scheme {scheme or '(none)'}:")


def check_status(response: requests.Response) -> None:
    """Raise for an HTTP error status: ``Permanent`` for 4xx but 408 and 429."""
    if response.status_code < 400:
        return
    reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
    if said := server_said(response):
        reason = f"{reason}: {said}"
    if response.status_code < 500 and response.status_code not in _TRANSIENT_HTTP:
        raise Permanent(reason)
    raise SourceError(reason)


def server_said(response: requests.Response, limit: int = 2000) -> str:
    """The reason in an error reply: our server's ``{"error": ...}``, or its text's start."""
    try:
        response.raw.decode_content = True
        body = response.raw.read(limit + 1)
    except (OSError, requests.RequestException, urllib3.exceptions.HTTPError):
        return ""
    text = body.decode("utf-8", "replace").strip()
    if "json" in response.headers.get("Content-Type", ""):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(error := value.get("error"), str):
            return error
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + "..."


def nfs_parts(url: str) -> tuple[str, str, str]:
    """``nfs://server:/dir/file`` or ``nfs://server/dir/file`` -> (server, /dir, file)."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    directory, _, name = path.rpartition("/")
    if not parts.hostname or not name:
        raise Permanent("expected nfs://server:/directory/file")
    return parts.hostname, directory or "/", name


@contextmanager
def nfs_file(url: str, io: Transport) -> Iterator[Path]:
    """Mount the file's directory read-only, yield the file's local path, unmount."""
    server, directory, name = nfs_parts(url)
    number = 0
    while (io.mount_base / f"netinstall-nfs-{number}").exists():
        number += 1
    mountpoint = io.mount_base / f"netinstall-nfs-{number}"
    mountpoint.mkdir(parents=True)
    try:
        io.runner(
            ["mount", "-t", "nfs", "-o", "ro,nolock", f"{server}:{directory}", str(mountpoint)],
            timeout=120,
        )
        try:
            path = mountpoint / name
            if not path.is_file():
                raise Permanent(f"{server}:{directory} has no file {name}")
            yield path
        finally:
            io.runner(["umount", str(mountpoint)], timeout=120)
    finally:
        mountpoint.rmdir()


# --- the answer-file steps (SPEC §7) ----------------------------------------------------


def run_generator(url: str, work: Path, io: Transport) -> str:
    """``answerfile_generator=URL``: fetch the script, run it; its stdout is the answer file."""
    script = fetch_bytes(url, transport=io)
    if not script.startswith(b"#!"):
        raise SourceError(f"the answer file generator {redact_url(url)} does not start with #!")
    path = work / "answerfile-generator"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(script)
    path.chmod(0o755)
    try:
        done = io.runner([str(path)], timeout=GENERATOR_TIMEOUT)
    except CommandError as exc:
        raise SourceError(
            f"the answer file generator {redact_url(url)} failed: {describe(exc)}"
        ) from exc
    log.info("the answer file generator wrote %d bytes", len(done.stdout))
    return done.stdout


def fetch_answerfile(args: BootArgs, work: Path, transport: Transport | None = None) -> str:
    """Step: the answer file's text (or its generator's output)."""
    io = transport or Transport()
    if args.answerfile_generator:
        return run_generator(args.answerfile_generator, work, io)
    if args.answerfile:
        return fetch_text(args.answerfile, transport=io, limit=limits.MAX_BYTES)
    raise InputError(
        "the kernel command line names no answer file: give answerfile=URL "
        "or answerfile_generator=URL"
    )


def validate_answerfile(text: str) -> AnswerFile:
    """Step: the answer file parsed and validated (``AnswerFileError`` lists every problem)."""
    result = answerfile.parse(text)
    for warning in result.warnings:
        log.warning("answer file: %s", warning)
    return result.model


def split_pin(repository: str) -> tuple[str, str | None]:
    """``URL#sha256=HEX`` -> (URL, HEX): the sha256 of the ``.treeinfo`` the answer file
    vouches for (a mirror's copy must be byte for byte that one); (URL, None) without a
    ``#``. InputError for any other text after ``#``."""
    base, sep, fragment = repository.partition("#")
    if not sep:
        return repository, None
    match = _PIN.fullmatch(fragment)
    if match is None:
        raise InputError(
            f"the repository URL {redact_url(repository)} ends in #{fragment}; after # only "
            "sha256=<the 64 hex digits of its .treeinfo's sha256> is understood"
        )
    return base, match.group(1).lower()


def repository_url(source: Source, server: str | None) -> str:
    """The repository URL, ending in "/": a url, ``nfs://server:/path``, or the server's;
    a url's ``#sha256=`` pin (``split_pin``) is kept after the "/"."""
    if source.type is SourceType.LOCAL:
        if not server:
            raise InputError(
                "the answer file's source is local (the provisioning server's repository), "
                "but the kernel command line has no netinstall.server="
            )
        return server.rstrip("/") + "/repo/"
    if not source.location:
        raise InputError(f"the answer file's {source.type.value} source has no location")
    base = source.location if source.type is SourceType.URL else f"nfs://{source.location}"
    base, pin = split_pin(base)
    return base.rstrip("/") + "/" + (f"#sha256={pin}" if pin else "")
