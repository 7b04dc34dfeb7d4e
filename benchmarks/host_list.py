"""``netinstall host list`` at fleet size, locally and over the HTTPS API, on both engines.

    .venv/bin/python benchmarks/host_list.py [--hosts 10000] [--engines sqlite,postgresql]
                                             [--runs 5] [--profile DIR]

For each engine: a server directory (``server init``; PostgreSQL: a throwaway cluster,
tests/postgres.py) with ``--hosts`` hosts in a mix of states (pending, signalled,
installing with a step, installed, running with a version and a check-in), each with its
events; ``netinstall server run`` on loopback with TLS (a throwaway CA, tests/pki.py).
Then, ``--runs`` times each, the command an operator types, in a process of its own:

    local       netinstall host list --dir DIR
    remote      netinstall --server https://127.0.0.1:PORT --ca-file --token-file host list
    local/json, remote/json     the same with --json

and prints the median and the slowest wall time of each, and (in this process) where the
time of one listing goes: the registry's rows, the records, the JSON encoding, the HTTP
request, the client's decoding. The goal (issue 19): under 1 s at 10,000 hosts, local and
remote. ``--profile DIR`` writes cProfile files of one in-process local listing and of
the server's reply (``python -m pstats``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NETINSTALL = Path(sys.executable).parent / "netinstall"
VERSION = "1.0"


def mac_of(index: int) -> str:
    return "52:54:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def populate(directory: Path, hosts: int) -> None:
    """``hosts`` hosts, one in five of each state, through the registry's own writes."""
    from pxe_server.model import State  # noqa: PLC0415 - after sys.path
    from pxe_server.registry import Registry  # noqa: PLC0415

    with Registry.open(directory) as registry:
        for index in range(hosts):
            mac = mac_of(index)
            registry.add_host(mac, name=f"host{index}", variables={"disk": "sda"})
            stage = index % 5
            if stage >= 1:
                registry.mark_signalled(mac)
            if stage >= 2:
                registry.record_event(mac, State.INSTALLING, step="extract-root", progress=0.5)
            if stage >= 3:
                registry.record_event(mac, State.INSTALLED)
            if stage >= 4:
                facts = {"payload_version": VERSION, "hostname": f"host{index}"}
                registry.record_event(mac, State.RUNNING, facts=facts)


def timed(argv: list[str], runs: int) -> list[tuple[float, float]]:
    """Each run's wall time and the command's own CPU time (user + system), seconds: on a
    machine shared with other work the CPU time says more than the wall time."""
    took = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        took.append((wall, cpu))
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-2000:]}")
    return took


@contextlib.contextmanager
def server(directory: Path, log: Path, pki: object) -> Iterator[int]:
    """``server run`` with TLS on loopback; its TLS port."""
    import re  # noqa: PLC0415

    argv = [str(NETINSTALL), "server", "run", str(directory), "--bind", "127.0.0.1",
            "--tftp-port", "0", "--http-port", "0", "--tls-cert", str(pki.cert),  # type: ignore[attr-defined]
            "--tls-key", str(pki.key), "--tls-port", "0"]  # type: ignore[attr-defined]  # fmt: skip
    with log.open("wb") as out:
        child = subprocess.Popen(argv, stderr=out, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"operator API on https://[^:]+:(\d+) only", log.read_text())
            if found:
                break
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server run did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield int(found[1])
    finally:
        child.terminate()
        child.wait(timeout=30)


def stage_times(directory: Path, url: str, token: str, ca: Path) -> dict[str, float]:
    """Where one listing's time goes, measured in this process (seconds)."""
    from common.protocol.codec import encode  # noqa: PLC0415
    from common.protocol.messages import HostList  # noqa: PLC0415
    from netinstall.api_client import ApiClient, endpoint, tls_context  # noqa: PLC0415
    from pxe_server import operator_view  # noqa: PLC0415
    from pxe_server.registry import Registry  # noqa: PLC0415

    found: dict[str, float] = {}

    def clock(name: str, call: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = call()
        found[name] = time.perf_counter() - start
        return result

    with Registry.open(directory) as registry:
        registry.list_hosts()  # connections made, statements compiled
        clock("registry.list_hosts", registry.list_hosts)
        clock("registry.last_events", registry.last_events)
        records = clock("host_records", lambda: operator_view.host_records(registry))
        clock(
            "encode+json",
            lambda: json.dumps(encode(HostList(tuple(records)))).encode(),  # type: ignore[arg-type]
        )
    client = ApiClient(endpoint(url), token, tls_context(ca))
    body = clock("http GET /hosts", lambda: client._exchange("GET", "/api/v1/hosts", None)[1])
    clock("client json.loads", lambda: json.loads(body))  # type: ignore[arg-type]
    clock("client total (call)", lambda: client.call("GET", "hosts", HostList))
    return found


def profile_local(directory: Path, out: Path) -> None:
    from netinstall.fleet import LocalFleet  # noqa: PLC0415
    from pxe_server.registry import Registry  # noqa: PLC0415

    with Registry.open(directory) as registry:
        fleet = LocalFleet(registry)
        fleet.hosts()
        cProfile.runctx("fleet.hosts()", globals(), {"fleet": fleet}, str(out))


def run_engine(
    engine: str, args: argparse.Namespace, tmp: Path
) -> dict[str, list[tuple[float, float]]]:
    from tests import postgres  # noqa: PLC0415
    from tests.pki import make_pki  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        directory = tmp / f"srv-{engine}"
        init = [str(NETINSTALL), "server", "init", str(directory)]
        if engine == "postgresql":
            cluster = stack.enter_context(postgres.cluster())
            init += ["--db", cluster.url(cluster.create_database())]
        subprocess.run(init, check=True, stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        populate(directory, args.hosts)
        print(f"{engine}: {args.hosts} hosts made in {time.perf_counter() - start:.1f} s")
        pki = make_pki(tmp / f"pki-{engine}")
        port = stack.enter_context(server(directory, tmp / f"{engine}.log", pki))
        url = f"https://127.0.0.1:{port}"
        token_file = directory / "api-token"
        remote = [str(NETINSTALL), "--server", url, "--ca-file", str(pki.ca),
                  "--token-file", str(token_file)]  # fmt: skip
        local = [str(NETINSTALL)]
        results = {
            "local": timed([*local, "host", "list", "--dir", str(directory)], args.runs),
            "remote": timed([*remote, "host", "list"], args.runs),
            "local/json": timed([*local, "host", "list", "--json", "--dir", str(directory)], 1),
            "remote/json": timed([*remote, "host", "list", "--json"], 1),
        }
        stages = stage_times(directory, url, token_file.read_text().strip(), pki.ca)
        print(f"{engine}: one listing in this process, s: "
              + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))  # fmt: skip
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile_local(directory, args.profile / f"local-{engine}.prof")
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="write cProfile files here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="host-list-") as tmp:
        table = {e: run_engine(e, args, Path(tmp)) for e in args.engines.split(",")}
    print(f"\nhost list at {args.hosts} hosts: wall time s, median (slowest) of {args.runs}, "
          "and the command's CPU time s, median; json: one run; load average "
          f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the remote "
          "figures include the server's work, its CPU not counted)")  # fmt: skip
    kinds = ("local", "remote", "local/json", "remote/json")
    print(f"{'engine':12}" + "".join(f"{k:>24}" for k in kinds))
    for engine, results in table.items():
        cells = []
        for kind in kinds:
            walls, cpus = [w for w, _ in results[kind]], [c for _, c in results[kind]]
            cells.append(f"{statistics.median(walls):.2f} ({max(walls):.2f}) cpu "
                         f"{statistics.median(cpus):.2f}")  # fmt: skip
        print(f"{engine:12}" + "".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
