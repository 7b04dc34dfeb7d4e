"""``netinstall plan``: the installer's plan for an answer file, printed without touching
anything; a bad answer file or a disk too small is one sentence and exit status 2."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from netinstall.cli import main
from tests.repository import write_repository

ANSWER = """<installation mode="fresh" srtype="ext">
  <primary-disk>sda</primary-disk>
  <keymap>us</keymap>
  <root-password type="plaintext">secret</root-password>
  <source type="url">{repo}</source>
  <script stage="filesystem-populated" type="url">http://10.0.0.1/files/populated.sh</script>
  <admin-interface name="eth0" proto="static">
    <ipaddr>10.0.0.5</ipaddr><subnet>255.255.255.0</subnet><gateway>10.0.0.1</gateway>
  </admin-interface>
  <timezone>UTC</timezone>
</installation>
"""
FILES = {
    "boot/xen.gz": b"x" * (1 << 20),
    "boot/vmlinuz": b"k" * (2 << 20),
    "boot/initrd.img": b"i" * (3 << 20),
    "dom0-rootfs.tar.zst": b"r" * (4 << 20),
}


def _answer(tmp_path: Path, repo: str = "http://10.0.0.1:8080/repo/") -> Path:
    path = tmp_path / "answer.xml"
    path.write_text(ANSWER.format(repo=repo))
    return path


def _repository(tmp_path: Path) -> str:
    """A repository as a local directory: .treeinfo and its files."""
    root = write_repository(tmp_path / "repo", FILES, "2.0.1", "cli")
    return f"file://{root}/"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["plan", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def test_the_whole_plan_is_printed(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    code, out, err = run(str(_answer(tmp_path, repo)), "--disk-size", "60GiB")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "fresh install, bios firmware"
    assert lines[1] == "disk: the primary disk /dev/sda, 60 GiB: GPT label, new-gpt layout"
    assert any(line.split()[:4] == ["1", "root", "18", "GiB"] for line in lines)
    assert f"fetch: {repo}: netinstall 2.0.1 (build cli)" in lines
    assert any(line.startswith("  dom0-rootfs.tar.zst  4 MiB  sha256 ") for line in lines)
    assert "  4 files, 10 MiB" in lines
    assert "boot loader: GRUB for BIOS on /dev/sda" in lines
    assert "scripts: filesystem-populated http://10.0.0.1/files/populated.sh" in lines
    assert (
        "network: management interface eth0 (static 10.0.0.5/255.255.255.0 via 10.0.0.1), "
        "bridge backend" in lines
    )
    assert "secret" not in out


def test_uefi_small_disk_with_disable_gpt_and_a_memory_limit(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    code, out, _ = run(
        str(_answer(tmp_path, repo)),
        "--disk-size",
        "20GiB",
        "--boot-args",
        "disable-gpt",
        "--memory",
        "200MiB",
    )
    assert code == 0, out
    assert "DOS label, dos layout" in out
    assert (
        "staging: the new backup partition (/dev/sda2, /tmp/netinstall/staging-disk/payload)" in out
    )
    assert "note: the disk is partitioned before the download" in out


def test_offline_names_the_repository_without_reading_it(tmp_path: Path) -> None:
    code, out, _ = run(
        str(_answer(tmp_path)), "--disk-size", "60G", "--offline", "--firmware", "uefi"
    )
    assert code == 0
    assert "fetch: http://10.0.0.1:8080/repo/: its .treeinfo" in out
    assert "  --offline: .treeinfo was not read" in out
    assert "boot loader: GRUB for UEFI on /dev/sda, ESP partition 4, EFI boot entry" in out


def test_a_disk_too_small_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    code, out, err = run(str(_answer(tmp_path)), "--disk-size", "20GiB", "--offline")
    assert code == 2
    assert out == ""
    assert err == (
        "netinstall: the GPT layout needs a disk of at least 46 GiB; this disk has 20 GiB; add "
        "disable-gpt to use the legacy DOS layout (12 GiB or more)\n"
    )
    code, _, err = run(str(_answer(tmp_path)), "--disk-size", "8GiB", "--boot-args", "disable-gpt")
    assert code == 2
    assert (
        err == "netinstall: the primary disk /dev/sda has 8 GiB; netinstall needs at least 12 GiB\n"
    )


def test_a_bad_answer_file_is_its_sentence_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text(
        ANSWER.format(repo="http://r/").replace("<timezone>UTC", "<timezone>Europe/Londen")
    )
    code, out, err = run(str(bad), "--disk-size", "60GiB", "--offline")
    assert code == 2
    assert out == ""
    assert err.startswith("netinstall: line ")
    assert "'Europe/Londen' is not a time zone in the tz database" in err
    assert len(err.splitlines()) == 1


def test_conflicting_options_and_bad_values_exit_2(tmp_path: Path) -> None:
    answer = str(_answer(tmp_path))
    code, _, err = run(
        answer,
        "--disk-size",
        "60GiB",
        "--offline",
        "--boot-args",
        "disable-gpt",
        "--firmware",
        "uefi",
    )
    assert (code, err) == (
        2,
        "netinstall: UEFI firmware boots only from GPT disks; remove disable-gpt\n",
    )
    code, _, err = run(answer, "--disk-size", "lots")
    assert code == 2
    assert "'lots' is not a size" in err
    code, _, err = run(str(tmp_path / "missing.xml"), "--disk-size", "60GiB")
    assert code == 2
    assert "cannot read the file" in err
    upgrade = tmp_path / "upgrade.xml"
    upgrade.write_text(
        '<installation mode="upgrade"><existing-installation>sda</existing-installation>'
        '<source type="url">http://r/</source></installation>'
    )
    code, _, err = run(str(upgrade), "--disk-size", "60GiB")
    assert code == 2
    assert "netinstall plan plans fresh installs" in err
