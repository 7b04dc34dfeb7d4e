"""Every bound the HTTP server puts on what clients send it, in one place (README, "Limits").

The provisioning network is shared with every machine being installed, so each of these
is what one client (or anyone on that network) can cost the server at most. A request
past one gets a 4xx with one sentence, or its connection closed; never a 5xx.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# -- bodies -----------------------------------------------------------------------------
MAX_BODY = 64 * KIB  # a JSON request body (413 past it); log bundles have their own
MAX_LOG_BUNDLE = 64 * MIB  # one log bundle upload (413 past it), streamed to disk
LOG_BUNDLES_KEPT = 5  # per host: the newest bundles kept, older ones removed ...
LOG_BYTES_KEPT = 256 * MIB  # ... and at most this much of them per host
LOG_WRITE_CHUNK = 1 * MIB  # bytes of a bundle held in memory before they are written
STALE_PART = 600.0  # seconds: a half-written bundle untouched this long is an old crash's

# -- bodies many hosts send alike (progress events, check-ins): decoded once --------------
DECODED_BODIES = 256  # distinct bodies kept with their decoded message (oldest out first)
DECODED_BODY_BYTES = 512  # only bodies at most this long are kept

# -- what hosts report, as stored -------------------------------------------------------
MAX_EVENT_MESSAGE = 4 * KIB  # UTF-8 bytes of an event message kept; the rest is cut off
# A host's newest events kept: an install writes about 30, an agent's work a few more, so
# only a host that floods its reports reaches it. Past it by EVENTS_PRUNE_SLACK (counted in
# the host's row, so that the check costs nothing), its oldest events are deleted.
MAX_EVENTS_PER_HOST = 2000
EVENTS_PRUNE_SLACK = 100

# -- slow clients -----------------------------------------------------------------------
# A connection must send a whole request line and headers within HEADER_TIMEOUT of being
# opened or of its previous reply (this is aiohttp's keep-alive timeout, which also ends
# an idle keep-alive connection after as long).
HEADER_TIMEOUT = 10.0  # seconds
# A body must keep coming: some bytes at least every BODY_IDLE_TIMEOUT, and after the first
# BODY_GRACE seconds on average at least BODY_MIN_RATE bytes a second; else it is dropped.
BODY_IDLE_TIMEOUT = 10.0  # seconds
BODY_GRACE = 10.0  # seconds
BODY_MIN_RATE = 32 * KIB  # bytes per second
# After a refusal (413, 408, ...) the rest of a body is read and thrown away this long at
# most, so that the client can read the reply, then the connection is closed.
LINGER = 2.0  # seconds

# -- machines the registry does not know (unknown_policy install) ------------------------
UNKNOWN_LIMIT = 64  # hosts registered that way and not yet running, at most (503 past it)
UNKNOWN_RATE = 30  # such registrations a minute, at most (429 past it); bursts of as many
UNKNOWN_QUIET = 60.0  # seconds without a refusal that end a burst of refusals (one log line)
