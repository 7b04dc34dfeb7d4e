"""HTTP, the BMC's part: ``POST /api/v1/hosts/<mac>/power`` (docs/protocol.md).

The host's segment server makes the call to the host's BMC (``bmc_control.power``): this
server, or, with several servers on the registry, the one on the host's segment, which
this one asks through the registry and waits for (``segments``; 504 if that server does
not run or answer in time). On a thread of its own: a BMC answers in seconds, and a slow
one must not hold the event loop. A BMC
that cannot be reached, refuses or answers wrongly is a 502 with one sentence
(``bmc_url.BmcError``); a host without a BMC, or a server whose ``bmc-key`` is not the one
that sealed the password, a 400.
"""

from __future__ import annotations

from common.protocol.messages import PowerReply, PowerRequest
from pxe_server import bmc_control
from pxe_server.http_edge import Call, Caller, Route
from pxe_server.http_files import blocking


async def power_host(call: Call[PowerRequest]) -> PowerReply:
    """The host's BMC asked: power on, off, cycle or boot (on if off, else cycle), or its
    status; with ``network_once`` the next boot set to the network first."""
    return await blocking(bmc_control.power, call.ctx.registry, call.mac, call.body)


BMC_API = (
    Route("POST", "/api/v1/hosts/{mac}/power", power_host, Caller.OPERATOR,
          "power the host on, off or around through its BMC, or ask its power; optionally "
          "set its next boot to the network, once", PowerRequest, PowerReply,
          refusals=(404, 502, 504)),
)  # fmt: skip
