"""netinstall.lab.paths: reading dom0's multipath state from the console and the registry."""

from __future__ import annotations

from netinstall.lab.paths import map_paths, reported_paths

# multipath -ll in dom0 (multipath-tools 0.9.4) with one iSCSI portal gone quiet.
ONE_FAILED = """\
360000000000000000e00000000010001 dm-0 IET,VIRTUAL-DISK
size=60G features='0' hwhandler='1 alua' wp=rw
|-+- policy='service-time 0' prio=1 status=active
| `- 2:0:0:1 sda 8:0  active ready running
`-+- policy='service-time 0' prio=0 status=enabled
  `- 3:0:0:1 sdb 8:16 failed faulty running
"""


def test_only_working_paths_count() -> None:
    assert map_paths(ONE_FAILED) == ["sda"]
    both = ONE_FAILED.replace("failed faulty", "active ready")
    assert map_paths(both) == ["sda", "sdb"]
    assert map_paths("") == []


def test_reported_paths_keep_the_working_ones() -> None:
    facts = {
        "multipath": [
            {"name": "mpatha", "wwid": "36", "paths": [
                {"device": "sda", "state": "ready"}, {"device": "sdb", "state": "faulty"},
            ]},
        ]
    }  # fmt: skip
    assert reported_paths(facts) == {"mpatha": ["sda"]}
    assert reported_paths({}) is None
    assert reported_paths(None) is None
