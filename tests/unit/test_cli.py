"""The CLI through click's runner: exit codes, one line per problem, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import answerfile
from netinstall.cli import main
from tests.conftest import DATA

GOOD = DATA / "answerfiles" / "good"
BAD = DATA / "answerfiles" / "bad"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_validate_good_file_prints_a_summary() -> None:
    code, out, _ = run("answerfile", "validate", str(GOOD / "seed-install.xml"))
    assert code == 0
    assert "valid: fresh install onto sda; source url http://pxeboot.example.com/XenServer/" in out
    assert "0 warnings" in out


def test_validate_bad_file_exits_2_with_line_numbers() -> None:
    bad = sorted(BAD.glob("*.xml"))[0]
    code, out, err = run("answerfile", "validate", str(GOOD / "seed-upgrade.xml"), str(bad))
    assert code == 2
    assert "seed-upgrade.xml: valid: upgrade of sda" in out
    lines = [line for line in err.splitlines() if line]
    assert lines
    assert all(line.startswith(f"{bad}: line ") for line in lines)


def test_validate_missing_file() -> None:
    code, _, err = run("answerfile", "validate", "/nonexistent/answer.xml")
    assert code == 2
    assert "cannot read the file" in err


def test_validate_json_prints_the_model_without_secrets() -> None:
    code, out, _ = run("answerfile", "validate", "--json", str(GOOD / "seed-install.xml"))
    assert code == 0
    report = json.loads(out)
    model = report["model"]
    assert model["mode"] == "fresh"
    assert model["sr_type"] == "ext"
    assert model["primary_disk"]["disk"]["spec"] == "sda"
    assert [d["spec"] for d in model["guest_disks"]] == ["sdb", "sdc"]
    assert model["root_password"] == {"type": "plaintext", "value": "<redacted>"}
    assert "mypassword" not in out


@pytest.mark.parametrize("mode", ["fresh", "upgrade", "restore"])
def test_example_validates(mode: str) -> None:
    code, out, _ = run("answerfile", "example", "--mode", mode)
    assert code == 0
    assert "<!--" in out, "the example is commented"
    assert answerfile.parse(out).model.mode.value == mode


def test_example_rejects_unknown_mode() -> None:
    code, _, err = run("answerfile", "example", "--mode", "sideways")
    assert code == 2
    assert "sideways" in err


def test_schema_command_prints_the_committed_schema() -> None:
    code, out, _ = run("answerfile", "schema")
    assert code == 0
    assert out == (Path(answerfile.__file__).parent / "answerfile.rng").read_text("utf-8")


def test_demo_needs_a_firmware() -> None:
    code, _, err = run("demo")
    assert code == 2
    assert "--firmware" in err
