"""A host's answer file rendered and validated for an operator, nothing else done.

    check_answer_file(registry, mac, settings, default_url) -> AnswerFileCheck

The API's ``GET /api/v1/hosts/<mac>/answerfile-check`` and the CLI's ``answerfile
validate --host MAC`` (locally) call it: the host is not signalled, no ticket is handed
out, no render is cached. Blocks (registry reads, rendering).
"""

from __future__ import annotations

import jinja2

import answerfile
from answerfile.model import AnswerFile, Mode
from common.errors import InputError
from common.protocol.messages import AnswerFileCheck
from pxe_server import decide, render
from pxe_server.model import Host, ServerSettings
from pxe_server.registry import Registry, UnknownHost


def _spec(disk: object) -> str:
    return str(getattr(disk, "spec", "?"))


def summary(model: AnswerFile) -> str:
    """What a valid answer file does, in one line (``answerfile validate``)."""
    if model.mode is Mode.RESTORE:
        return f"restore from the backup partition on {_spec(model.backup_disk)}"
    if model.mode is Mode.FRESH:
        primary = model.primary_disk
        what = f"fresh install onto {_spec(primary.disk if primary else None)}"
    else:
        what = f"upgrade of {_spec(model.existing_installation)}"
    sources = ", ".join(
        f"{s.type.value} {s.location}" if s.location else s.type.value for s in model.sources
    )
    return f"{what}; source {sources}"


def _rendered(
    registry: Registry, host: Host, settings: ServerSettings, default_url: str
) -> answerfile.Result:
    """``host``'s answer file rendered and parsed; InputError or jinja2's error if not."""
    profile = registry.get_profile(host.profile)
    if profile is None:
        raise InputError(f"host {host.mac} has profile {host.profile!r}, which does not exist")
    default = registry.settings().get("payload_version")
    version = decide.payload_version(host, profile, default)
    registered = [r.version for r in registry.repositories()]
    repo_url = decide.repository_url(version, registered, default, settings.http_base, default_url)
    return answerfile.parse(render.answer_file(host, profile, settings, repo_url))


def check_answer_file(
    registry: Registry, mac: str, settings: ServerSettings, default_url: str
) -> AnswerFileCheck:
    """``mac``'s answer file rendered as the server would serve it now, and validated.
    Nothing is written: the host is not signalled, no render is cached. UnknownHost if
    there is no such host; a template or registry problem is an invalid file."""
    host = registry.get_host(mac)
    if host is None:
        raise UnknownHost(f"no host {mac} in the registry")
    try:
        parsed = _rendered(registry, host, settings, default_url)
    except jinja2.TemplateError as exc:
        return AnswerFileCheck(host.mac, False, None, (f"the template does not work: {exc}",), ())
    except InputError as exc:
        return AnswerFileCheck(host.mac, False, None, exc.problems, ())
    warnings = tuple(str(w) for w in parsed.warnings)
    return AnswerFileCheck(host.mac, True, summary(parsed.model), (), warnings)
