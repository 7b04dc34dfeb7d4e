"""installer_core.logbundle: support.tar.bz2 holds the logs with every secret redacted."""

from __future__ import annotations

import tarfile
from pathlib import Path

from installer_core import logbundle
from installer_core.fetch import fetch_text
from tests.unit.test_installer_fakes import PASSWORD, TOKEN, FakeRunner, make_ctx

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
    ctx = make_ctx(tmp_path, cmdline)
    ctx.answer_text = ANSWER.replace("change-me", PASSWORD)
    import answerfile

    ctx.answer = answerfile.parse(ctx.answer_text).model
    ctx.log_file.parent.mkdir(parents=True)
    ctx.log_file.write_text(f"fetched with {TOKEN}; root password {PASSWORD}\n")
    proc_cmdline = tmp_path / "cmdline"
    proc_cmdline.write_text(cmdline + "\n")
    ctx.failed_reason = f"cannot read http://s/x?token={TOKEN}"
    runner = FakeRunner(
        {"dmesg": "[0.1] booted\n", "ip": f"inet 10.0.0.5 {PASSWORD}\n", "blkid": 2}
    )
    bundle = logbundle.make_bundle(ctx, runner, proc_cmdline)
    assert bundle == ctx.work / "support.tar.bz2"
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


def test_the_root_password_element_is_redacted_even_unparsed(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.answer_text = f"<installation><root-password>{PASSWORD}</root-password><bad/>"
    assert PASSWORD in logbundle.secrets_of(ctx)
    assert PASSWORD not in logbundle.scrub(f"log says {PASSWORD}", logbundle.secrets_of(ctx))


def test_scrub_leaves_other_text_alone() -> None:
    assert logbundle.scrub("plain text", []) == "plain text"
    assert logbundle.scrub("x?token=abc&y=1", []) == "x?token=REDACTED&y=1"
    assert fetch_text  # the fetcher redacts with the same helper
