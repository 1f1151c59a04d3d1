"""The CLI as an operator meets it: init, keys, config check, errors and exit codes, demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from carechain.cli.main import cli
from carechain.cli.output import EXIT_INVALID_INPUT
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey
from carechain.node.wallet.keystore import save_key


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CARECHAIN_PASSPHRASE", "correct horse")
    return CliRunner()


def test_init_new_chain_then_config_check(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "node0"
    result = runner.invoke(
        cli, ["init", "--home", str(home), "--validator", "--new-chain", "carechain-dev", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["node_id"].startswith("12D3KooW")
    checked = runner.invoke(cli, ["config", "check", "--home", str(home), "--json"])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.output)
    assert report["chain_id"] == "carechain-dev"
    assert report["validators"][0]["node_id"] == summary["node_id"]
    again = runner.invoke(cli, ["init", "--home", str(home)])
    assert again.exit_code == EXIT_INVALID_INPUT
    assert "initialised" in again.output


def test_keys_new_list_show_export_import(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "h"
    created = runner.invoke(cli, ["keys", "new", "--home", str(home), "--name", "admin", "--json"])
    assert created.exit_code == 0, created.output
    address = json.loads(created.output)["address"]
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--home", str(home), "--json"]).output)
    assert [k["address"] for k in listed] == [address]
    shown = runner.invoke(cli, ["keys", "show", "--home", str(home), "admin"])
    assert address in shown.output
    out = tmp_path / "admin-backup.json"
    exported = runner.invoke(
        cli, ["keys", "export", "--home", str(home), "admin", "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    other = tmp_path / "other"
    imported = runner.invoke(cli, ["keys", "import", "--home", str(other), str(out)])
    assert imported.exit_code == 0, imported.output
    assert address in imported.output


def test_export_with_wrong_passphrase_fails_cleanly(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "h"
    runner.invoke(cli, ["keys", "new", "--home", str(home), "--name", "admin"])
    monkeypatch.setenv("CARECHAIN_PASSPHRASE", "wrong")
    result = runner.invoke(
        cli, ["keys", "export", "--home", str(home), "admin", "--out", str(tmp_path / "x.json")]
    )
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "wrong passphrase" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.json").exists()


def test_config_check_reports_a_bad_field(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "n"
    runner.invoke(cli, ["init", "--home", str(home), "--validator", "--new-chain", "carechain-dev"])
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["validators"][0]["power"] = "ten"
    (home / "genesis.json").write_text(json.dumps(genesis))
    result = runner.invoke(cli, ["config", "check", "--home", str(home)])
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "validators[0].power" in result.output


def _set(home: Path, section: str, field: str, value: str) -> None:
    config = load_node_config(home)
    changed = getattr(config, section).model_copy(update={field: value})
    save_node_config(home, config.model_copy(update={section: changed}))


def test_config_check_says_what_stops_the_node_or_surprises_its_operator(
    runner: CliRunner, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for home, more in ((first, ["--new-chain", "carechain-dev"]), (second, [])):
        made = runner.invoke(cli, ["init", "--home", str(home), "--validator", *more])
        assert made.exit_code == 0, made.output
    shutil.copy(first / "genesis.json", second / "genesis.json")

    def check(home: Path) -> tuple[int, dict[str, list[str]]]:
        result = runner.invoke(cli, ["config", "check", "--home", str(home), "--json"])
        report = json.loads(result.output[: result.output.rindex("}") + 1])
        return result.exit_code, report

    code, report = check(first)
    assert (code, report["errors"], report["warnings"]) == (0, [], [])
    # a validator key genesis does not list: it follows until governance adds it
    code, report = check(second)
    assert code == 0
    assert "not in genesis's validator set" in report["warnings"][0]
    # an unauthenticated API open to other machines
    _set(first, "api", "listen", "0.0.0.0:26680")
    assert "no authentication" in check(first)[1]["warnings"][0]
    # a blob backend this installation does not have
    _set(first, "blobs", "backend", "ftp")
    code, report = check(first)
    assert code == EXIT_INVALID_INPUT
    assert "'ftp' is not an installed backend" in report["errors"][0]
    _set(first, "blobs", "backend", "fs")
    # a genesis made with another node key than this home's
    save_key(
        first / "keys" / "node.json", PrivateKey.generate(), name="node", purpose="node",
        passphrase=None,
    )  # fmt: skip
    code, report = check(first)
    assert code == EXIT_INVALID_INPUT
    assert "would refuse its connections" in report["errors"][0]


@pytest.mark.parametrize(
    "args",
    [
        ["grant", "add", "--vault", "ab" * 20, "--grantee", "01" * 32, "--key", "p1"],
        ["vault", "create", "--key1", "p1", "--key2", "p2", "--type", "glucose",
         "--team", "00" * 32],
        ["governance", "propose", "--key", "validator", "--action", "institution-register",
         "--name", "lab", "--public-key", "ff" * 32],
    ],
)  # fmt: skip
def test_a_hex_string_that_is_no_public_key_is_refused_in_one_line(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    """64 valid hex characters that are not an Ed25519 point: refused before any key file or
    node is touched, in one line, not with a library's traceback."""
    common = ["--home", str(tmp_path / "nowhere"), "--api", "http://127.0.0.1:9"]
    result = runner.invoke(cli, [*args[:2], *common, *args[2:]])
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert "not an Ed25519 public key" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("passphrase", ["", "a", "seven77"])
def test_a_weak_passphrase_for_a_new_home_is_refused_and_nothing_is_written(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passphrase: str
) -> None:
    given = tmp_path / "passphrase.txt"
    given.write_text(passphrase)
    home = tmp_path / "home"
    result = runner.invoke(
        cli,
        ["init", "--home", str(home), "--moniker", "a", "--validator",
         "--passphrase-file", str(given)],
    )  # fmt: skip
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert "needs at least 8 characters" in " ".join(result.output.split())
    assert not home.exists() or not any(home.rglob("*"))


def test_carechain_home_stands_in_for_home(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    made = runner.invoke(cli, ["keys", "new", "--home", str(home), "--name", "p1"])
    assert made.exit_code == 0, made.output
    monkeypatch.setenv("CARECHAIN_HOME", str(home))
    listed = runner.invoke(cli, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [k["name"] for k in json.loads(listed.output)] == ["p1"]
    assert "CARECHAIN_HOME" in runner.invoke(cli, ["grant", "add", "--help"]).output
