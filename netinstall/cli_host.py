"""``netinstall host add|list|show|set|remove``: the machines of the fleet (SPEC §9).

Each command has one body over ``netinstall.fleet.Fleet``: the server directory's
registry (``--dir``, safe beside a running server) or, with ``netinstall --server URL``,
the operator API; the output is the same either way. Assigning work (``host
rearm|upgrade|restore``) lives in ``cli_work``; ``cli.py`` attaches it. No output ever
shows an install token, an agent credential, the API token or a password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import click

from common.errors import InputError
from netinstall.cli_bmc import bmc_options, bmc_spec, bmc_text
from netinstall.cli_options import dir_option, echo_json, open_fleet, table, when

if TYPE_CHECKING:
    from common.protocol.messages import EventRecord, HostRecord


@click.group("host")
def host() -> None:
    """Register machines, follow their installs, assign them work."""


def variables(pairs: Sequence[str]) -> dict[str, str]:
    """``--var KEY=VALUE`` options as a dict; InputError for one without ``=`` and for a
    KEY given twice."""
    result: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--var {text!r} is not KEY=VALUE")
        if key.strip() in result:
            raise InputError(f"variable {key.strip()!r} is given twice")
        result[key.strip()] = value
    return result


def _event_json(event: EventRecord | None) -> object:
    from common.protocol.codec import encode

    return None if event is None else encode(event, envelope=False)


def host_json(record: HostRecord) -> dict[str, object]:
    """The host as the API shows it, its latest event included (``last_event``)."""
    from common.protocol.codec import encode

    return encode(record, envelope=False)


def _token_text(item: HostRecord) -> str:
    from common.protocol.messages import Presence

    if item.token is not Presence.SET:
        return "none"
    if item.token_expires is None:
        return "set (not handed out yet)"
    return f"set, enrols until {when(item.token_expires)}"


def _segment_text(item: HostRecord) -> str:
    if item.segment_server is None:
        return "- (not known yet: power calls run on the server asked)"
    return f"{item.segment_server}{' (pinned)' if item.segment_pinned else ''}"


def _san_text(item: HostRecord) -> str:
    from pxe_server.model import DEFAULT_INITIATOR_PREFIX

    san = item.san
    if san is None:
        return "-"
    how = san.address or "DHCP"
    paths = " + ".join((san.root_path, *san.paths))
    initiator = san.initiator or DEFAULT_INITIATOR_PREFIX + item.mac.replace(":", "")
    return f"{paths} (storage NIC {how}, initiator {initiator})"


def _fact_fields(facts: Mapping[str, object]) -> list[tuple[str, str]]:
    """What ``host show`` prints of the last running report's facts."""
    shown = []
    addresses = facts.get("addresses")
    if isinstance(addresses, list) and addresses:
        text = ", ".join(
            f"{a.get('address')} ({a.get('interface')})" for a in addresses if isinstance(a, dict)
        )
        shown.append(("addresses", text))
    for key, label in (("xen_version", "xen"), ("sr_type", "SR type"), ("sr_uuid", "SR uuid")):
        if facts.get(key):
            shown.append((label, str(facts[key])))
    updates = facts.get("updates")
    if isinstance(updates, list):  # its agent knows updates: these are on its disk
        shown.append(("updates", ", ".join(str(u) for u in updates) or "none"))
    maps = facts.get("multipath")
    for entry in maps if isinstance(maps, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("paths"), list):
            paths = ", ".join(
                f"{p.get('device')} {p.get('state')}" for p in entry["paths"] if isinstance(p, dict)
            )
            shown.append((f"multipath {entry.get('name')}", paths or "no path"))
    return shown


def _event_line(event: EventRecord) -> str:
    parts = [when(event.time), event.state.value]
    parts += [event.step] if event.step else []
    parts += [f"{event.progress:.0%}"] if event.progress is not None else []
    parts += [event.message] if event.message else []
    return "  ".join(parts)


@host.command("add")
@click.argument("mac")
@dir_option
@click.option("--profile", default="default", show_default=True)
@click.option("--name", help="Host name (not an FQDN) for the answer file.")
@click.option("--var", "pairs", multiple=True, help="Template variable KEY=VALUE (repeat).")
@click.option(
    "--san-target",
    "san_targets",
    multiple=True,
    help="SAN boot: the root LUN, iscsi:<server>::<port>:<lun>:<target IQN> (RFC 4173); "
    "repeat for each further path to it (another portal: iSCSI multipath).",
)
@click.option("--san-address", help="SAN boot: the storage NIC's ADDRESS/PREFIX (default DHCP).")
@click.option("--san-gateway", help="SAN boot: the storage network's gateway.")
@click.option("--initiator", help="SAN boot: the host's initiator IQN (default: from its MAC).")
@bmc_options
def host_add(
    mac: str,
    directory: str,
    profile: str,
    name: str | None,
    pairs: tuple[str, ...],
    *,
    san_targets: tuple[str, ...],
    bmc_url: str | None,
    bmc_password_file: str | None,
    bmc_ca_file: str | None,
    bmc_insecure: bool,
    **san: str | None,
) -> None:
    """Register MAC for a network install with PROFILE (netboot armed); with --bmc, the
    BMC that powers it (`host power`, `host rearm --power`)."""
    from common.protocol.messages import HostCreate, SanRecord

    given = variables(pairs)
    if not san_targets and any(san.values()):
        raise InputError("--san-address, --san-gateway and --initiator need --san-target")
    root = None
    if san_targets:
        first, *more = san_targets
        root = SanRecord(first, san["san_address"], san["san_gateway"], san["initiator"],
                         tuple(more))  # fmt: skip
    with open_fleet(directory) as fleet:  # the fleet first: no password asked for in vain
        bmc = bmc_spec(bmc_url, bmc_password_file, bmc_ca_file, bmc_insecure)
        item = fleet.add_host(HostCreate(mac, profile, name, given, root, bmc))
    lun = f", root LUN {' + '.join((item.san.root_path, *item.san.paths))}" if item.san else ""
    power = f", BMC {item.bmc.url}" if item.bmc else ""
    click.echo(
        f"added {item.mac}: profile {item.profile}{lun}{power}, state pending, netboot armed"
    )


@host.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def host_list(directory: str, as_json: bool) -> None:
    """Every host: state, step, versions and its last event."""
    with open_fleet(directory) as fleet:
        rows = fleet.hosts()
    if as_json:
        echo_json([host_json(item) for item in rows])
        return
    if not rows:
        click.echo("no hosts; add one with `netinstall host add MAC`")
        return
    lines: list[tuple[str, ...]] = [
        ("MAC", "NAME", "PROFILE", "STATE", "STEP", "WORK", "ASSIGNED", "RUNNING", "LAST EVENT")
    ]
    conflicts = []
    for item in rows:
        last = item.last_event
        event = f"{when(last.time)} {last.message or ''}".rstrip() if last else "-"
        state = item.state.value + ("" if item.netboot_armed else " (disarmed)")
        if item.conflict:
            state += " CONFLICT"
            conflicts.append(f"{item.mac}: {item.conflict}")
        work = (item.step, item.work, item.assigned_version, item.running_version)
        lines.append(
            (item.mac, item.name or "-", item.profile, state, *(w or "-" for w in work), event)
        )
    click.echo(table(lines))
    for line in conflicts:  # never silent: a second installer presented a host's token
        click.echo(f"CONFLICT {line}; see `netinstall host show MAC`, rearm to start afresh")


@host.command("show")
@click.argument("mac")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def host_show(mac: str, directory: str, as_json: bool) -> None:
    """One host's record and its events, oldest first."""
    from pxe_server.model import normalise_mac

    mac = normalise_mac(mac)
    with open_fleet(directory) as fleet:
        item = fleet.host(mac)
        events = fleet.events(mac)
    if as_json:
        echo_json({**host_json(item), "events": [_event_json(e) for e in events]})
        return
    fields = [
        ("mac", item.mac),
        ("name", item.name or "-"),
        ("profile", item.profile),
        ("state", f"{item.state.value}, netboot {'armed' if item.netboot_armed else 'disarmed'}"),
        ("step", item.step or "-"),
        ("progress", f"{item.progress:.0%}" if item.progress is not None else "-"),
        ("work", item.work or "-"),
        ("reboot policy", item.reboot_policy.value),
        ("assigned version", item.assigned_version or "-"),
        ("running version", item.running_version or "-"),
        ("root LUN", _san_text(item)),
        ("bmc", bmc_text(item)),
        ("segment server", _segment_text(item)),
        ("last check-in", when(item.last_checkin) if item.last_checkin else "-"),
        ("install token", _token_text(item)),
        ("installer key", f"enrolled from {item.enrolled_from}" if item.enrolled_from else "none"),
        ("conflict", item.conflict or "-"),
        ("agent credential", item.agent_credential.value),
        ("variables", ", ".join(f"{k}={v}" for k, v in item.variables.items()) or "-"),
        *_fact_fields(item.facts),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<18}{value}")
    click.echo("events:")
    for event in events:
        click.echo(f"  {_event_line(event)}")


@host.command("set")
@click.argument("mac")
@dir_option
@click.option("--name", help="The host name (not an FQDN); '' for none.")
@click.option("--profile", help="Its profile (the assigned payload version follows it).")
@click.option("--var", "pairs", multiple=True, help="Set template variable KEY=VALUE (repeat).")
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Remove a variable (repeat).")
@bmc_options
@click.option("--no-bmc", is_flag=True, help="Forget its BMC (and the stored password).")
@click.option(
    "--server",
    "segment",
    metavar="NAME|auto",
    help="Pin its segment server (the one its power calls go through; `server list`); auto: "
    "learn it again from the server that serves its boots and check-ins.",
)
def host_set(
    mac: str,
    directory: str,
    *,
    name: str | None,
    profile: str | None,
    pairs: tuple[str, ...],
    unset: tuple[str, ...],
    bmc_url: str | None,
    bmc_password_file: str | None,
    bmc_ca_file: str | None,
    bmc_insecure: bool,
    no_bmc: bool,
    segment: str | None,
) -> None:
    """Change MAC's name, profile, variables, BMC or segment server in place (its state and
    work unchanged).

    --var and --unset change the variables named and keep the others (passwords too); the
    server merges them in the transaction that writes the host, so another operator's
    change of other variables made meanwhile is kept. A password given is a new one.
    --bmc replaces its BMC whole (URL, password, CA); --no-bmc removes it. --server NAME
    pins the server its power calls go through, --server auto learns it again."""
    from common.protocol.codec import ABSENT, Absent
    from common.protocol.messages import HostEdit
    from pxe_server.model import normalise_mac

    mac = normalise_mac(mac)
    given = variables(pairs)
    if no_bmc and (bmc_url or bmc_password_file or bmc_ca_file or bmc_insecure):
        raise InputError("--no-bmc removes the BMC: give it without the other --bmc options")
    changes_bmc = no_bmc or bmc_url is not None
    changes = (name, profile, segment)
    if all(c is None for c in changes) and not given and not unset and not changes_bmc:
        bmc_spec(bmc_url, bmc_password_file, bmc_ca_file, bmc_insecure)  # options without --bmc
        raise InputError(
            "nothing to change: give --name, --profile, --var, --unset, --bmc, --no-bmc or --server"
        )
    pin: str | Absent | None = ABSENT
    if segment is not None:
        from pxe_server.segments import server_name_of

        pin = None if segment == "auto" else server_name_of(segment)
    with open_fleet(directory) as fleet:
        bmc = None
        if changes_bmc:
            fleet.host(mac)  # an unknown host before a password is asked for
            bmc = (
                None if no_bmc else bmc_spec(bmc_url, bmc_password_file, bmc_ca_file, bmc_insecure)
            )
        edit = HostEdit(
            name=ABSENT if name is None else (name or None),
            profile=ABSENT if profile is None else profile,
            set_variables=given or ABSENT,
            unset_variables=tuple(unset) or ABSENT,
            bmc=bmc if changes_bmc else ABSENT,
            segment_server=pin,
        )
        item = fleet.edit_host(mac, edit)
    variables_text = ", ".join(sorted(item.variables)) or "none"
    power = f", BMC {item.bmc.url if item.bmc else 'none'}" if changes_bmc or item.bmc else ""
    if segment is not None:
        power += f", segment server {_segment_text(item)}"
    click.echo(
        f"changed {item.mac}: name {item.name or '-'}, profile {item.profile}, variables "
        f"{variables_text}{power}; state {item.state.value} (rearm to install with the changes)"
    )


@host.command("remove")
@click.argument("mac")
@dir_option
def host_remove(mac: str, directory: str) -> None:
    """Forget MAC and its events."""
    from pxe_server.model import mac_syntax

    mac = mac_syntax(mac)  # a record made before group addresses were refused, too
    with open_fleet(directory) as fleet:
        removed = fleet.remove_host(mac)
    click.echo(f"removed {removed}")
