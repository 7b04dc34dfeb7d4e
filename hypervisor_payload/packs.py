"""Supplemental packs, in the XenServer layout (SPEC §8).

A repository lists its packs in ``XS-REPOSITORY-LIST``: one directory per line,
relative to the repository (blank lines and ``#`` comments ignored). Each pack
directory, named ``packages.<name>`` as on XenServer media, holds:

``XS-REPOSITORY``
    The pack's identity::

        <repository originator="netinstall" name="example" product="netinstall"
                    version="1.0" build="1">
          <description>What the pack adds</description>
        </repository>

``XS-PACKAGES``
    Its files, in the order the installer applies them, each with its size and
    sha256::

        <packages>
          <package label="tools" type="deb" size="123" sha256="...">tools_1.0_all.deb</package>
          <package label="example-root" type="tar" root="/" size="10240"
                   sha256="...">example-root.tar</package>
          <package label="example-install" type="script" size="77"
                   sha256="...">install.sh</package>
        </packages>

    ``deb``: installed with ``dpkg -i`` inside the installed root. ``tar``: an
    uncompressed tarball of files and symlinks only (no directory entries, so
    existing directories keep their modes), unpacked at ``root`` of the
    installed system. ``script``: run inside the installed root (chroot) after
    the other packages, with ``NETINSTALL_PACK=<name>`` in its environment; a
    non-zero exit fails the install.

A pack *source* (what ``build_pack`` reads; ``packs_example/`` is one) is a
directory with ``pack.toml`` (``name``, ``version``, ``build``, ``description``
and optionally ``originator``), and optionally ``debs/*.deb``, a ``root/`` tree
that becomes ``<name>-root.tar``, and an ``install.sh``. The generated files are
byte-reproducible: sorted entries, fixed owner and time, modes from the
executable bit only.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from lxml import etree

from common.errors import SourceError
from hypervisor_payload.checksums import sha256_file

REPOSITORY_LIST = "XS-REPOSITORY-LIST"
REPOSITORY_FILE = "XS-REPOSITORY"
PACKAGES_FILE = "XS-PACKAGES"
PRODUCT = "netinstall"
ORIGINATOR = "netinstall"
TYPES = ("deb", "tar", "script")
# Every generated file's time: the Debian 12 release (2023-06-10), so builds repeat.
PACK_MTIME = 1686355200

_NAME = re.compile(r"[a-z0-9][a-z0-9.+_-]*")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PackError(SourceError):
    """A supplemental pack (or its source) that cannot be used."""


@dataclass(frozen=True)
class PackFile:
    label: str
    type: str  # deb, tar or script
    file: str  # a plain file name inside the pack directory
    size: int
    sha256: str
    root: str = "/"  # where a tar unpacks, in the installed system


@dataclass(frozen=True)
class Pack:
    directory: str  # relative to the repository: packages.<name>
    originator: str
    name: str
    product: str
    version: str
    build: str
    description: str
    files: tuple[PackFile, ...]


def pack_directory(name: str) -> str:
    return f"packages.{name}"


# --- reading -----------------------------------------------------------------


def _parse_xml(text: bytes, what: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        return etree.fromstring(text, parser)
    except etree.XMLSyntaxError as exc:
        raise PackError(f"{what} is not well-formed XML: {exc}") from exc


def _attr(element: etree._Element, name: str, what: str) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise PackError(f"{what}: <{element.tag}> needs a {name}= attribute")
    return value.strip()


def parse_repository(text: bytes, directory: str) -> Pack:
    """The identity part of a pack from ``XS-REPOSITORY`` (``files`` left empty)."""
    what = f"{directory}/{REPOSITORY_FILE}"
    root = _parse_xml(text, what)
    if root.tag != "repository":
        raise PackError(f"{what}: expected a <repository> root element, found <{root.tag}>")
    name = _attr(root, "name", what)
    if not _NAME.fullmatch(name):
        raise PackError(f"{what}: name={name!r} is not a pack name ([a-z0-9][a-z0-9.+_-]*)")
    product = _attr(root, "product", what)
    if product != PRODUCT:
        raise PackError(f"{what}: product={product!r}: this pack is not for {PRODUCT}")
    described = root.find("description")
    return Pack(
        directory=directory,
        originator=_attr(root, "originator", what),
        name=name,
        product=product,
        version=_attr(root, "version", what),
        build=_attr(root, "build", what),
        description=(described.text or "").strip() if described is not None else "",
        files=(),
    )


def parse_packages(text: bytes, directory: str) -> tuple[PackFile, ...]:
    """The file list of ``XS-PACKAGES``, in order."""
    what = f"{directory}/{PACKAGES_FILE}"
    root = _parse_xml(text, what)
    if root.tag != "packages":
        raise PackError(f"{what}: expected a <packages> root element, found <{root.tag}>")
    files: list[PackFile] = []
    for element in root:
        if not isinstance(element.tag, str):
            continue  # comments and processing instructions
        if element.tag != "package":
            raise PackError(f"{what} line {element.sourceline}: unexpected <{element.tag}>")
        where = f"{what} line {element.sourceline}"
        kind = _attr(element, "type", where)
        if kind not in TYPES:
            raise PackError(f"{where}: type={kind!r}: expected one of {', '.join(TYPES)}")
        name = (element.text or "").strip()
        if not _FILE.fullmatch(name) or name in (REPOSITORY_FILE, PACKAGES_FILE):
            raise PackError(f"{where}: {name!r} is not a plain file name in the pack")
        size = _attr(element, "size", where)
        if not size.isdigit():
            raise PackError(f"{where}: size={size!r}: expected a number of bytes")
        digest = _attr(element, "sha256", where)
        if not _SHA256.fullmatch(digest):
            raise PackError(f"{where}: sha256={digest!r}: expected 64 lowercase hex digits")
        root_dir = element.get("root", "/")
        if not PurePosixPath(root_dir).is_absolute() or ".." in PurePosixPath(root_dir).parts:
            raise PackError(f"{where}: root={root_dir!r}: expected an absolute path")
        label = _attr(element, "label", where)
        files.append(PackFile(label, kind, name, int(size), digest, root_dir))
    if len({f.file for f in files}) != len(files):
        raise PackError(f"{what}: a file is listed twice")
    return tuple(files)


def read_pack(directory: Path, verify: bool = True) -> Pack:
    """A pack directory, checked: metadata, and (``verify``) each file's size and sha256."""
    name = directory.name
    try:
        pack = parse_repository((directory / REPOSITORY_FILE).read_bytes(), name)
        files = parse_packages((directory / PACKAGES_FILE).read_bytes(), name)
    except FileNotFoundError as exc:
        raise PackError(f"pack {name}: {Path(exc.filename).name} is missing") from exc
    if name != pack_directory(pack.name):
        raise PackError(f"pack {name}: its XS-REPOSITORY names it {pack.name!r}")
    for entry in files if verify else ():
        path = directory / entry.file
        if not path.is_file():
            raise PackError(f"pack {pack.name}: {entry.file} is missing")
        if path.stat().st_size != entry.size:
            raise PackError(f"pack {pack.name}: {entry.file} has the wrong size")
        if sha256_file(path) != entry.sha256:
            raise PackError(f"pack {pack.name}: sha256 mismatch for {entry.file}")
    return replace(pack, files=files)


def parse_repository_list(text: str) -> tuple[str, ...]:
    """The pack directories an ``XS-REPOSITORY-LIST`` names."""
    found: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        path = PurePosixPath(line)
        if path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
            raise PackError(f"{REPOSITORY_LIST} line {number}: {line!r} is not a directory here")
        found.append(str(path))
    return tuple(found)


def read_packs(repository: Path, verify: bool = True) -> tuple[Pack, ...]:
    """Every pack a repository lists (none when it has no ``XS-REPOSITORY-LIST``)."""
    listing = repository / REPOSITORY_LIST
    if not listing.is_file():
        return ()
    names = parse_repository_list(listing.read_text())
    return tuple(read_pack(repository / name, verify) for name in names)


# --- building ----------------------------------------------------------------


def _source_metadata(source: Path) -> dict[str, str]:
    try:
        data = tomllib.loads((source / "pack.toml").read_text())
    except FileNotFoundError:
        raise PackError(f"pack source {source}: pack.toml is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise PackError(f"pack source {source}: pack.toml: {exc}") from exc
    known = {"name", "version", "build", "description", "originator"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PackError(f"pack source {source}: pack.toml: unknown keys {', '.join(unknown)}")
    for key in ("name", "version", "build", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise PackError(f'pack source {source}: pack.toml needs {key} = "..."')
    if not _NAME.fullmatch(data["name"]):
        raise PackError(f"pack source {source}: name {data['name']!r} is not a pack name")
    return {"originator": ORIGINATOR, **{k: str(v).strip() for k, v in data.items()}}


def source_name(source: Path) -> str:
    """The name of the pack ``source`` builds, its ``pack.toml`` checked as ``build_pack`` does."""
    return _source_metadata(source)["name"]


def _tar_member(path: Path, arcname: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = PACK_MTIME
    if path.is_symlink():
        info.type = tarfile.SYMTYPE
        info.linkname = str(path.readlink())
        info.mode = 0o777
    elif path.is_file():
        info.size = path.stat().st_size
        info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
    else:
        raise PackError(f"pack source: {path} is neither a file nor a symlink")
    return info


def write_root_tar(tree: Path, target: Path) -> None:
    """A reproducible tarball of the files and symlinks under ``tree`` (no directories)."""
    members: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        here = Path(dirpath)
        members += [here / name for name in filenames]
        members += [here / name for name in dirnames if (here / name).is_symlink()]
    members.sort(key=lambda p: p.relative_to(tree).as_posix())
    with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as archive:
        for path in members:
            info = _tar_member(path, path.relative_to(tree).as_posix())
            if info.isfile():
                with path.open("rb") as stream:
                    archive.addfile(info, stream)
            else:
                archive.addfile(info)


def _entry(target: Path, label: str, kind: str) -> etree._Element:
    element = etree.Element("package")
    element.set("label", label)
    element.set("type", kind)
    if kind == "tar":
        element.set("root", "/")
    element.set("size", str(target.stat().st_size))
    element.set("sha256", sha256_file(target))
    element.text = target.name
    return element


def _xml_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build_pack(source: Path, repository: Path) -> Pack:
    """Build the pack whose source is ``source`` into ``repository/packages.<name>``."""
    meta = _source_metadata(source)
    out = repository / pack_directory(meta["name"])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    packages = etree.Element("packages")
    for deb in sorted((source / "debs").glob("*.deb")):
        if not _FILE.fullmatch(deb.name):
            raise PackError(f"pack source {source}: {deb.name} is not a plain file name")
        shutil.copyfile(deb, out / deb.name)
        packages.append(_entry(out / deb.name, deb.name.split("_", 1)[0], "deb"))
    if (source / "root").is_dir():
        tar = out / f"{meta['name']}-root.tar"
        write_root_tar(source / "root", tar)
        packages.append(_entry(tar, f"{meta['name']}-root", "tar"))
    if (source / "install.sh").is_file():
        shutil.copyfile(source / "install.sh", out / "install.sh")
        (out / "install.sh").chmod(0o755)
        packages.append(_entry(out / "install.sh", f"{meta['name']}-install", "script"))
    if len(packages) == 0:
        raise PackError(f"pack source {source}: no debs/, root/ or install.sh: nothing to pack")
    repo_element = etree.Element("repository")
    for key in ("originator", "name"):
        repo_element.set(key, meta[key])
    repo_element.set("product", PRODUCT)
    for key in ("version", "build"):
        repo_element.set(key, meta[key])
    etree.SubElement(repo_element, "description").text = meta["description"]
    (out / REPOSITORY_FILE).write_bytes(_xml_bytes(repo_element))
    (out / PACKAGES_FILE).write_bytes(_xml_bytes(packages))
    return read_pack(out)


def write_repository_list(repository: Path, packs: tuple[Pack, ...] | list[Pack]) -> Path:
    """``XS-REPOSITORY-LIST`` naming ``packs`` in order (an empty file when there are none)."""
    path = repository / REPOSITORY_LIST
    path.write_text("".join(f"{pack.directory}\n" for pack in packs))
    return path


def add_to_repository(repository: Path, sources: Sequence[Path]) -> tuple[Pack, ...]:
    """Build ``sources`` into ``repository`` and list them in its ``XS-REPOSITORY-LIST``.

    Packs already listed stay (one of the same name is replaced). Returns the packs built.
    """
    listed = read_packs(repository, verify=False)  # a broken list fails before any build
    built = [build_pack(source, repository) for source in sources]
    replaced = {pack.directory for pack in built}
    kept = [p for p in listed if p.directory not in replaced]
    write_repository_list(repository, [*kept, *built])
    return tuple(built)
