"""Where a passphrase comes from: a file, the environment, or a prompt; never the command line
(it would stay in shell history and in the process list)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from carechain.consensus.crypto import PrivateKey
from carechain.node.wallet.keystore import KeystoreError, load_key, read_key_info

ENVIRONMENT_VARIABLE = "CARECHAIN_PASSPHRASE"
# A new keystore's passphrase is at least this long: argon2id slows a guess down, it does not
# make "a" safe.
NEW_PASSPHRASE_MIN = 8


def passphrase_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"File holding the keystore passphrase (else ${ENVIRONMENT_VARIABLE}, else a prompt).",
    )(function)


def obtain_passphrase(passphrase_file: Path | None, *, confirm: bool) -> str:
    """The passphrase from a file, the environment or a prompt. `confirm`: it will protect a
    new key, so it is asked twice at a prompt and must be NEW_PASSPHRASE_MIN long (checked
    before anything is written)."""
    passphrase = _read_passphrase(passphrase_file, confirm=confirm)
    if confirm and len(passphrase) < NEW_PASSPHRASE_MIN:
        raise KeystoreError(
            f"a new key's passphrase needs at least {NEW_PASSPHRASE_MIN} characters "
            f"(this one has {len(passphrase)})",
            code="weak_passphrase",
            hint="nothing was written; choose a longer one",
        )
    return passphrase


def _read_passphrase(passphrase_file: Path | None, *, confirm: bool) -> str:
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise KeystoreError(
                f"{passphrase_file}: cannot read passphrase: {exc.strerror}"
            ) from None
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        return from_environment
    if not sys.stdin.isatty():
        raise KeystoreError(
            "a passphrase is needed and there is no terminal to ask on",
            code="passphrase_required",
            hint=f"pass --passphrase-file or set {ENVIRONMENT_VARIABLE}",
        )
    return str(click.prompt("Keystore passphrase", hide_input=True, confirmation_prompt=confirm))


def unlock_key(path: Path, passphrase_file: Path | None) -> PrivateKey:
    """Load a key file, asking for the passphrase only when it is encrypted."""
    if not read_key_info(path).encrypted:
        return load_key(path, None)
    return load_key(path, obtain_passphrase(passphrase_file, confirm=False))
