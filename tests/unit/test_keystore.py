"""Keystore files: encrypted round trip, wrong passphrase, damage, plaintext dev keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from carechain.node.wallet.keystore import (
    KdfParams,
    KeystoreError,
    load_key,
    read_key_info,
    save_key,
)
from carechain.tests.strategies import deterministic_key

FAST = KdfParams.for_tests()


def test_encrypted_round_trip_and_public_details(tmp_path: Path) -> None:
    key = deterministic_key(1)
    path = tmp_path / "k.json"
    info = save_key(path, key, name="admin", purpose="account", passphrase="pw", kdf=FAST)
    assert info.encrypted
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.seed.hex() not in path.read_text()
    assert load_key(path, "pw").public_key == key.public_key
    listed = read_key_info(path)
    assert listed.address == info.address
    assert listed.public_key == key.public_key


@pytest.mark.security
def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    save_key(path, deterministic_key(1), name="a", purpose="account", passphrase="pw", kdf=FAST)
    with pytest.raises(KeystoreError) as caught:
        load_key(path, "not the passphrase")
    assert caught.value.code == "wrong_passphrase"
    assert "wrong passphrase" in str(caught.value)


def test_missing_passphrase_says_where_to_give_it(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    save_key(path, deterministic_key(1), name="a", purpose="account", passphrase="pw", kdf=FAST)
    with pytest.raises(KeystoreError, match="passphrase-file") as caught:
        load_key(path, None)
    assert caught.value.code == "passphrase_required"


def test_plaintext_dev_key_opens_without_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    info = save_key(path, deterministic_key(2), name="n", purpose="node", passphrase=None)
    assert not info.encrypted
    assert load_key(path, None).public_key == deterministic_key(2).public_key


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty passphrase"):
        save_key(
            tmp_path / "k.json", deterministic_key(1), name="a", purpose="account", passphrase=""
        )


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: "not json", "not JSON"),
        (lambda d: json.dumps({"format": "other"}), "not a carechain key file"),
        (lambda d: json.dumps({**d, "version": 9}), "version 9"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "kdf"}), "lacks kdf"),
        (lambda d: json.dumps({**d, "public_key": "zz"}), "not hex"),
        (
            lambda d: json.dumps({**d, "public_key": deterministic_key(9).public_key.hex()}),
            "does not match",
        ),
    ],
)
def test_damaged_files_are_reported(tmp_path: Path, damage: object, fragment: str) -> None:
    path = tmp_path / "k.json"
    save_key(path, deterministic_key(1), name="a", purpose="account", passphrase="pw", kdf=FAST)
    document = json.loads(path.read_text())
    path.write_text(damage(document))  # type: ignore[operator]
    with pytest.raises(KeystoreError, match=fragment):
        load_key(path, "pw")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError) as caught:
        load_key(tmp_path / "absent.json", "pw")
    assert caught.value.code == "key_not_found"
