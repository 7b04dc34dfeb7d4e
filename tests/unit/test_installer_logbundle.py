"""installer_core.logbundle: support.tar.bz2 holds the logs with every secret redacted."""

from __future__ import annotations

import tarfile
from pathlib import Path

from answerfile.bootargs import parse_cmdline
from installer_core import logbundle
from installer_core.fetch import fetch_text
from tests.unit.test_installer_fakes import PASSWORD, TOKEN, FakeRunner

SSH = "ssh-SECRET-9999"
ANSWER = (Path(logbundle.__file__).parents[1] / "answerfile/examples/fresh.xml").read_text()


def _members(bundle: Path) -> dict[str, str]:
    with tarfile.open(bundle, "r:bz2") as tar:
        return {
            m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_the_bundle_holds_everything_with_secrets_redacted(tmp_path: Path) -> None:
    cmdline = (
        f"install answerfile=http://s/answerfile/m?token={TOKEN} "
        f"netinstall.server=http://s netinstall.token={TOKEN} sshpassword={SSH}"
    )
    secrets = logbundle.Secrets(parse_cmdline(cmdline))
    answer_text = ANSWER.replace("change-me", PASSWORD)
    secrets.learn_answer(answer_text)
    work = tmp_path / "work"
    log_file = work / "install.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text(f"fetched with {TOKEN}; root password {PASSWORD}\n")
    proc_cmdline = tmp_path / "cmdline"
    proc_cmdline.write_text(cmdline + "\n")
    reason = f"cannot read http://s/x?token={TOKEN}"
    runner = FakeRunner(
        {"dmesg": "[0.1] booted\n", "ip": f"inet 10.0.0.5 {PASSWORD}\n", "blkid": 2}
    )
    bundle = logbundle.make_bundle(
        log_file, work, answer_text, reason, secrets, runner=runner, proc_cmdline=proc_cmdline
    )
    assert bundle == work / "support.tar.bz2"
    members = _members(bundle)
    assert set(members) == {
        f"support/{name}"
        for name in (
            "install.log",
            "cmdline.txt",
            "answerfile.xml",
            "failure.txt",
            "dmesg.txt",
            "ip-addr.txt",
            "lsblk.txt",
            "blkid.txt",
        )
    }
    everything = "".join(members.values())
    for secret in (TOKEN, PASSWORD, SSH):
        assert secret not in everything
    assert "SECRET" not in everything
    assert "[0.1] booted" in members["support/dmesg.txt"]
    assert "blkid exited with status 2" in members["support/blkid.txt"]
    assert '<root-password type="plaintext">REDACTED</root-password>' in everything
    assert "netinstall.token=REDACTED sshpassword=REDACTED" in members["support/cmdline.txt"]


def test_the_root_password_element_is_redacted_even_unparsed() -> None:
    secrets = logbundle.Secrets(parse_cmdline("install"))
    secrets.learn_answer(f"<installation><root-password>{PASSWORD}</root-password><bad/>")
    assert PASSWORD in secrets.known()
    assert PASSWORD not in secrets.scrub(f"log says {PASSWORD}")


def test_a_parsed_password_is_a_secret_too() -> None:
    secrets = logbundle.Secrets(parse_cmdline(f"install netinstall.token={TOKEN}"))
    secrets.add("p&w")  # the element said p&amp;w
    secrets.add(None)
    assert secrets.known() == [TOKEN, "p&w"]
    assert secrets.scrub(f"{TOKEN} p&w") == "REDACTED REDACTED"


def test_scrub_leaves_other_text_alone() -> None:
    assert logbundle.scrub("plain text", []) == "plain text"
    assert logbundle.scrub("x?token=abc&y=1", []) == "x?token=REDACTED&y=1"
    assert fetch_text  # the fetcher redacts with the same helper
