"""The registry's tables, declared once for SQLite and PostgreSQL (SQLAlchemy Core).

Schema 8 of the hand-written SQLite migrations (``pxe_server.migrations``) is Alembic's
baseline (``migrations/versions/baseline_schema_8.py``); a later revision changes both
this file and a new revision. JSON values (variables, facts, a SAN target) are text;
times are seconds since the epoch (double precision); revisions and event ids 64-bit
on PostgreSQL (SQLite's INTEGER is 64-bit already).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    false,
)

metadata = MetaData()

# The hand-written migrations' version (1..8); 9 once Alembic manages the registry, so
# that a release from before reads "a newer schema" and refuses it rather than misread it.
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# Server secrets: the registry's key, the API token's keyed hash; never in settings().
secrets = Table(
    "secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

profiles = Table(
    "profiles",
    metadata,
    Column("name", Text, primary_key=True),
    Column("template", Text, nullable=False),
    Column("boot_chain", Text, nullable=False),
    Column("xen_args", Text, nullable=False),
    Column("kernel_args", Text, nullable=False),
    Column("payload_version", Text),
    Column("san_boot", Boolean, nullable=False, server_default=false()),
    Column("multipath", Boolean, nullable=False, server_default=false()),
    Column("storage_nic", Text, nullable=False, server_default="net1"),
)

hosts = Table(
    "hosts",
    metadata,
    Column("mac", Text, primary_key=True),
    Column("name", Text),
    Column("profile", Text, ForeignKey("profiles.name"), nullable=False),
    Column("variables", Text, nullable=False, server_default="{}"),
    Column("netboot_armed", Boolean, nullable=False),
    Column("state", Text, nullable=False),
    Column("step", Text),
    Column("progress", Float),
    Column("assigned_version", Text),
    Column("running_version", Text),
    Column("token_sealed", Text),
    Column("token_hash", Text, unique=True),
    Column("agent_credential_hash", Text, unique=True),
    Column("facts", Text, nullable=False, server_default="{}"),
    Column("work", Text),
    Column("reboot_policy", Text, nullable=False, server_default="auto"),
    Column("last_checkin", Float),
    Column("san", Text),
    Column("install_key_hash", Text),
    Column("enrolled_from", Text),
    Column("enrolled_at", Float),
    Column("ticket_issued_at", Float),
    Column("token_expires", Float),
    Column("conflict", Text),
    Column("revision", BigInteger, nullable=False, server_default="0"),
    Column("event_count", Integer, nullable=False, server_default="0"),
    Index("hosts_by_install_key", "install_key_hash", unique=True),
    Index("hosts_by_profile", "profile"),
)

events = Table(
    "events",
    metadata,
    # INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (ids never reused), BIGSERIAL-like on
    # PostgreSQL: a host's events are ordered by id.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("time", Float, nullable=False),
    Column("mac", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("step", Text),
    Column("progress", Float),
    Column("message", Text),
    Index("events_by_mac", "mac", "id"),
    sqlite_autoincrement=True,
)

repositories = Table(
    "repositories",
    metadata,
    Column("version", Text, primary_key=True),
    Column("directory", Text, nullable=False),
    Column("added", Float, nullable=False),
)

# Registry-wide counters. The "revision" row is the lock a write that adds rows no host
# row guards takes first (``Registry._serialise``); its value was the last host revision
# handed out until revisions became random, and is no longer changed.
counters = Table(
    "counters",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# -- revision 0009: named pools and server-side jobs -------------------------------------

pools = Table(
    "pools",
    metadata,
    Column("name", Text, primary_key=True),
    Column("created", Float, nullable=False),
)

# A pool's hosts, the master at position 0. A host is in one pool at most (its MAC is
# the key); ``Registry.delete_host`` drops a member and refuses a master.
pool_hosts = Table(
    "pool_hosts",
    metadata,
    Column("mac", Text, ForeignKey("hosts.mac"), primary_key=True),
    Column("pool", Text, ForeignKey("pools.name"), nullable=False),
    Column("position", Integer, nullable=False),
    Index("pool_hosts_by_pool", "pool", "position", unique=True),
)

# Server-side jobs (``pxe_server.jobs``): parameters, per-host progress and the log are
# JSON text; the lease (who runs it, until when) is what servers claim and renew.
jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("pool", Text),
    Column("parameters", Text, nullable=False),
    Column("hosts", Text, nullable=False),
    Column("started_by", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("ended", Float),
    Column("reason", Text),
    Column("lease_holder", Text),
    Column("lease_until", Float),
    Column("cancel_requested", Text),
    Column("log", Text, nullable=False, server_default="[]"),
    Column("log_count", Integer, nullable=False, server_default="0"),
    Index("jobs_by_state", "state", "id"),
    sqlite_autoincrement=True,
)

# -- revision 0010: a host's BMC ------------------------------------------------------------

# A host's BMC (power control): its URL (user, never a password), the password sealed with
# the server directory's bmc-key (``secrets.BmcKey``) and that key's id, the CA
# certificates its Redfish TLS is verified with, or ``insecure``. A host's row goes with it
# (``Registry.delete_host`` deletes it first; the foreign key cascades too).
bmcs = Table(
    "bmcs",
    metadata,
    Column("mac", Text, ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
    Column("url", Text, nullable=False),
    Column("password_sealed", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("ca_pem", Text),
    Column("insecure", Boolean, nullable=False, server_default=false()),
    Column("updated", Float, nullable=False),
)

# Updates (README "Updates"): one row per update added (its file in the shared
# directory until `update clean`), one per host an update was given to or found on, and
# what each host's agent last said of its updates (the precheck's facts).
updates = Table(
    "updates",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("applies_to", Text, nullable=False),  # JSON list of payload versions
    Column("reboot", Boolean, nullable=False),
    Column("size", BigInteger, nullable=False),  # the signed bundle's bytes
    Column("sha256", Text, nullable=False),  # the signed bundle's sha256
    Column("metadata_sha256", Text, nullable=False),  # update.json's: the content's identity
    Column("added", Float, nullable=False),
    Column("added_by", Text, nullable=False),
    Column("cleaned", Float),  # when its file was removed (the record stays)
)

host_updates = Table(
    "host_updates",
    metadata,
    Column("mac", Text, ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
    Column("update_id", Text, ForeignKey("updates.id"), primary_key=True),
    Column("state", Text, nullable=False),  # updates.HostUpdateState
    Column("reason", Text),
    Column("reboot_policy", Text, nullable=False),
    Column("boot_id", Text),  # the boot it was applied in, while a reboot is awaited
    Column("updated", Float, nullable=False),
    Index("host_updates_by_update", "update_id", "state"),
)

update_facts = Table(
    "update_facts",
    metadata,
    Column("mac", Text, ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
    Column("updates", Text, nullable=False),  # JSON list of the ids its own log holds
    Column("free_mib", BigInteger),
    Column("boot_id", Text),
    Column("seen", Float, nullable=False),
)

# -- revision 0011: servers, hosts' segment servers, power requests --------------------------

# Every ``server run`` of the registry (``pxe_server.segments``): its name, the address it
# advertises, when it started and when it last said it runs (its heartbeat).
servers = Table(
    "servers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("address", Text, nullable=False),
    Column("started", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

# A host's segment server: the server that last served its network boot, enrolment or
# check-in (written only when that changes), or the one an operator pinned (``pinned``).
# A host's row goes with it (``Registry.delete_host``; the foreign key cascades too).
host_segments = Table(
    "host_segments",
    metadata,
    Column("mac", Text, ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
    Column("server", Text, nullable=False),
    Column("pinned", Boolean, nullable=False, server_default=false()),
    Column("updated", Float, nullable=False),
)

# A power call for a host that another server (``server``, its segment server) carries
# out: the request and the reply (or the refusal) as JSON text; ``state`` waiting ->
# running -> answered. Answered ones are deleted after a while (``segments``).
power_requests = Table(
    "power_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("mac", Text, nullable=False),
    Column("server", Text, nullable=False),
    Column("asked_by", Text, nullable=False),
    Column("request", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("answer", Text),
    Column("created", Float, nullable=False),
    Column("answered", Float),
    Index("power_requests_by_server", "server", "state", "id"),
    sqlite_autoincrement=True,
)
