"""Encrypted key files: argon2id derives a key from the passphrase, secretbox seals the seed.

A keystore file is JSON so an operator can see what it is (name, purpose, public key, address)
without the passphrase. A plaintext variant exists only for development networks and says so
in its `cipher.name`. Files are written atomically with mode 0600.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Final, Literal

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from carechain.consensus.crypto import PrivateKey, account_id, encode_address
from carechain.consensus.errors import InvalidInput

FORMAT: Final = "carechain-keystore"
VERSION: Final = 1
KeyPurpose = Literal["node", "validator", "account"]


class KeystoreError(InvalidInput):
    code = "keystore_error"


def keys_dir(home: Path) -> Path:
    return home / "keys"


def key_path(home: Path, name: str) -> Path:
    """The key file `name` of a home folder (`<home>/keys/<name>.json`)."""
    if not name or "/" in name or name.startswith("."):
        raise KeystoreError(f"{name!r} is not a key name", hint="use letters, digits and -")
    return keys_dir(home) / f"{name}.json"


@dataclasses.dataclass(frozen=True, slots=True)
class KdfParams:
    """argon2id cost. The default is libsodium's "interactive" level (64 MiB, 2 passes)."""

    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE

    @classmethod
    def for_tests(cls) -> KdfParams:
        return cls(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a keystore file says about itself, readable without the passphrase."""

    path: Path
    name: str
    purpose: str
    public_key: bytes
    encrypted: bool

    @property
    def address(self) -> str:
        return encode_address(account_id(self.public_key))


def _derive(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return bytes(
        nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE,
            passphrase.encode("utf-8"),
            salt,
            opslimit=params.opslimit,
            memlimit=params.memlimit,
        )
    )


def save_key(
    path: Path,
    key: PrivateKey,
    *,
    name: str,
    purpose: KeyPurpose,
    passphrase: str | None,
    kdf: KdfParams | None = None,
) -> KeyInfo:
    """Write `key` to `path`. `passphrase=None` writes a plaintext dev key (say so loudly)."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "purpose": purpose,
        "public_key": key.public_key.hex(),
        "address": encode_address(account_id(key.public_key)),
    }
    if passphrase is None:
        document["cipher"] = {"name": "none-insecure-dev", "seed": key.seed.hex()}
    else:
        if not passphrase:
            raise KeystoreError("an empty passphrase protects nothing; choose one")
        params = kdf or KdfParams()
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box = nacl.secret.SecretBox(_derive(passphrase, salt, params))
        document["kdf"] = {
            "name": "argon2id",
            "opslimit": params.opslimit,
            "memlimit": params.memlimit,
            "salt": salt.hex(),
        }
        document["cipher"] = {"name": "xsalsa20poly1305", "ciphertext": box.encrypt(key.seed).hex()}
    _write_private(path, json.dumps(document, indent=2) + "\n")
    return KeyInfo(path, name, purpose, key.public_key, passphrase is not None)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeystoreError(f"{path}: no key file here", code="key_not_found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeystoreError(f"{path}: not a carechain key file (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeystoreError(f"{path}: not a carechain key file")
    if document.get("version") != VERSION:
        raise KeystoreError(
            f"{path}: key file version {document.get('version')!r} is not {VERSION}"
        )
    return document


def _field(document: dict[str, Any], path: Path, *keys: str) -> Any:
    value: Any = document
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise KeystoreError(f"{path}: key file lacks {'.'.join(keys)}; the file is damaged")
        value = value[key]
    return value


def read_key_info(path: Path) -> KeyInfo:
    document = _read(path)
    try:
        public_key = bytes.fromhex(_field(document, path, "public_key"))
    except (ValueError, TypeError):
        raise KeystoreError(f"{path}: public_key is not hex; the file is damaged") from None
    return KeyInfo(
        path,
        str(_field(document, path, "name")),
        str(_field(document, path, "purpose")),
        public_key,
        _field(document, path, "cipher", "name") != "none-insecure-dev",
    )


def load_key(path: Path, passphrase: str | None) -> PrivateKey:
    """Open a key file; a wrong passphrase is a KeystoreError with code `wrong_passphrase`."""
    document = _read(path)
    info = read_key_info(path)
    cipher = _field(document, path, "cipher", "name")
    try:
        if cipher == "none-insecure-dev":
            seed = bytes.fromhex(_field(document, path, "cipher", "seed"))
        elif cipher == "xsalsa20poly1305":
            seed = _decrypt(document, path, passphrase)
        else:
            raise KeystoreError(f"{path}: unknown cipher {cipher!r}")
        key = PrivateKey(seed)
    except (ValueError, TypeError):
        raise KeystoreError(f"{path}: key material is malformed; the file is damaged") from None
    if key.public_key != info.public_key:
        raise KeystoreError(f"{path}: decrypted key does not match its public key; file damaged")
    return key


def _decrypt(document: dict[str, Any], path: Path, passphrase: str | None) -> bytes:
    if passphrase is None:
        raise KeystoreError(
            f"{path} is encrypted and needs a passphrase",
            code="passphrase_required",
            hint="pass --passphrase-file or set CARECHAIN_PASSPHRASE",
        )
    if _field(document, path, "kdf", "name") != "argon2id":
        raise KeystoreError(f"{path}: unknown key derivation {document['kdf']['name']!r}")
    params = KdfParams(
        int(_field(document, path, "kdf", "opslimit")),
        int(_field(document, path, "kdf", "memlimit")),
    )
    salt = bytes.fromhex(_field(document, path, "kdf", "salt"))
    box = nacl.secret.SecretBox(_derive(passphrase, salt, params))
    try:
        return bytes(box.decrypt(bytes.fromhex(_field(document, path, "cipher", "ciphertext"))))
    except nacl.exceptions.CryptoError:
        raise KeystoreError(
            f"{path}: wrong passphrase", code="wrong_passphrase", hint="nothing was changed"
        ) from None
