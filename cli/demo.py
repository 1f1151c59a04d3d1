"""`carechain demo`: the paper's scenario, narrated and checked step by step.

Every step states what it does and checks its outcome; the command exits 1 if any check fails.
What runs today is the foundation every later step stands on: the identities, keystores and
genesis of a 4-validator hospital network, multi-party transaction signatures, domain
separation, and the envelope encryption of a multi-MB CGM report for the patient and one
hospital only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click

from carechain.cli.output import console
from carechain.config.genesis import load_genesis, save_genesis
from carechain.consensus import crypto
from carechain.consensus.errors import AddressError, DecodeError, InvalidInput
from carechain.consensus.genesis import (
    ConsensusParams,
    Genesis,
    Institution,
    InstitutionKind,
    default_governance_threshold,
)
from carechain.consensus.types import Tx, Validator, ValidatorSet, Vote, VoteType
from carechain.node.keystore import KdfParams, load_key, save_key

CHAIN_ID = "carechain-demo"
CGM_REPORT_BYTES = 3 * 1024 * 1024


@dataclasses.dataclass
class Scenario:
    """Narrates steps and records every check; `failures` decides the exit code."""

    failures: list[str] = dataclasses.field(default_factory=list)
    step_number: int = 0

    def step(self, title: str) -> None:
        self.step_number += 1
        console.print(f"\n[bold cyan]{self.step_number}. {title}[/bold cyan]")

    def say(self, text: str) -> None:
        console.print(f"   {text}")

    def check(self, ok: bool, claim: str) -> None:
        mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
        console.print(f"   {mark} {claim}")
        if not ok:
            self.failures.append(claim)


@dataclasses.dataclass(frozen=True)
class Cast:
    patient_keys: tuple[crypto.PrivateKey, crypto.PrivateKey]
    hospitals: dict[str, crypto.PrivateKey]
    trusted_party: crypto.PrivateKey
    validator_keys: tuple[crypto.PrivateKey, ...]
    node_keys: tuple[crypto.PrivateKey, ...]


def _cast() -> Cast:
    return Cast(
        patient_keys=(crypto.PrivateKey.generate(), crypto.PrivateKey.generate()),
        hospitals={name: crypto.PrivateKey.generate() for name in ("A", "B", "C")},
        trusted_party=crypto.PrivateKey.generate(),
        validator_keys=tuple(crypto.PrivateKey.generate() for _ in range(4)),
        node_keys=tuple(crypto.PrivateKey.generate() for _ in range(4)),
    )


def _identities(scenario: Scenario, cast: Cast, folder: Path) -> None:
    scenario.step("Identities: a patient with two keys, hospitals A, B, C and a trusted party")
    passphrase = "demo passphrase"  # noqa: S105 - a demo's throwaway keystore
    path = folder / "patient-key-1.json"
    save_key(
        path,
        cast.patient_keys[0],
        name="patient-1",
        purpose="account",
        passphrase=passphrase,
        kdf=KdfParams(),
    )
    reopened = load_key(path, passphrase)
    scenario.check(
        reopened.public_key == cast.patient_keys[0].public_key,
        "the patient's key survives an argon2id-encrypted keystore round trip",
    )
    try:
        load_key(path, "wrong passphrase")
        scenario.check(False, "a wrong passphrase is refused")
    except InvalidInput as exc:
        scenario.check(exc.code == "wrong_passphrase", f"a wrong passphrase is refused: {exc}")
    address = crypto.encode_address(crypto.account_id(cast.patient_keys[0].public_key))
    scenario.say(f"patient address {address}")
    typo = address[:10] + ("q" if address[10] != "q" else "p") + address[11:]
    try:
        crypto.decode_address(typo)
        scenario.check(False, "a mistyped address is detected")
    except AddressError:
        scenario.check(True, "a one-character typo in the address is detected by its checksum")


def _network(scenario: Scenario, cast: Cast, folder: Path) -> Genesis:
    scenario.step("Genesis of a 4-validator hospital network")
    names = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
    validators = ValidatorSet.of(
        [
            Validator(name, vk.public_key, nk.public_key, 10)
            for name, vk, nk in zip(names, cast.validator_keys, cast.node_keys, strict=True)
        ]
    )
    institutions = (
        *(
            Institution(f"hospital-{n.lower()}", InstitutionKind.HOSPITAL, k.public_key)
            for n, k in cast.hospitals.items()
        ),
        Institution("trusted-party", InstitutionKind.TRUSTED_PARTY, cast.trusted_party.public_key),
    )
    genesis = Genesis(
        chain_id=CHAIN_ID,
        genesis_time_ms=int(time.time() * 1000),
        validators=validators,
        governance_threshold=default_governance_threshold(4),
        institutions=institutions,
        params=ConsensusParams(),
        extra_data_types=(),
    )
    path = folder / "genesis.json"
    save_genesis(path, genesis)
    reloaded = load_genesis(path)
    scenario.say(f"genesis hash {genesis.genesis_hash.hex()}")
    for validator in validators.validators:
        scenario.say(f"{validator.name:<11} node {crypto.peer_id(validator.node_key)}")
    scenario.check(reloaded == genesis, "genesis.json reloads to the identical canonical record")
    scenario.check(
        genesis.governance_threshold == 3, "governance needs 3 of the 4 validators (ceil 2n/3)"
    )
    return genesis


def _cosigning(scenario: Scenario, cast: Cast) -> None:
    scenario.step(
        "Hospital A initiates a transaction on the patient's CGM vault; the patient co-signs"
    )
    vault = crypto.derived_account_id("vault", cast.patient_keys[0].public_key, b"cgm")
    partial = Tx(CHAIN_ID, "record.put", vault, 1, 2**40, b"cgm report reference").signed_by(
        cast.hospitals["A"]
    )
    scenario.check(
        partial.valid_signers() == {cast.hospitals["A"].public_key},
        "hospital A's signature alone is present: the transaction is partial",
    )
    complete = partial.signed_by(cast.patient_keys[0])
    scenario.check(complete.id == partial.id, "co-signing does not change the transaction id")
    scenario.check(
        complete.valid_signers()
        == {cast.hospitals["A"].public_key, cast.patient_keys[0].public_key},
        "both signatures verify on the completed transaction",
    )
    scenario.check(
        Tx.decode(complete.encode()) == complete,
        f"canonical encoding round trip ({len(complete.encode())} bytes)",
    )
    vote = Vote(CHAIN_ID, VoteType.PRECOMMIT, 1, 0, complete.id, cast.validator_keys[0].public_key)
    signed_vote = vote.signed_by(cast.validator_keys[0])
    replayed = crypto.verify(
        cast.validator_keys[0].public_key,
        crypto.Purpose.TX,
        CHAIN_ID,
        complete.id,
        signed_vote.signature,
    )
    scenario.check(
        signed_vote.signature_valid() and not replayed,
        "a validator's vote signature cannot be replayed as a transaction signature",
    )
    other_chain = crypto.verify(
        cast.hospitals["A"].public_key,
        crypto.Purpose.TX,
        "carechain-other",
        complete.id,
        complete.signatures[0].signature,
    )
    scenario.check(not other_chain, "a signature for this chain does not verify on another")


def _synthetic_cgm(size: int) -> Iterator[bytes]:
    """A deterministic stand-in for a CGM export: readings every 5 minutes as CSV."""
    produced, minute = 0, 0
    while produced < size:
        line = f"2026-11-{1 + minute // 1440:02d},{minute % 1440},{90 + (minute * 7) % 110}\n"
        chunk = (line * 512).encode()[: size - produced]
        produced += len(chunk)
        minute += 5
        yield chunk


def _envelope(scenario: Scenario, cast: Cast) -> None:
    scenario.step("A multi-MB CGM report is encrypted for the patient and hospital A only")
    plaintext = b"".join(_synthetic_cgm(CGM_REPORT_BYTES))
    data_key = crypto.new_data_key()
    ciphertext = b"".join(crypto.encrypt_stream(data_key, [plaintext]))
    cid_digest = hashlib.sha256(ciphertext).hexdigest()
    scenario.say(f"{len(plaintext):,} bytes -> {len(ciphertext):,} bytes of ciphertext")
    scenario.say(f"ciphertext sha256 {cid_digest[:32]}... (the blob store's content id)")
    readers = [cast.patient_keys[0].public_key, cast.hospitals["A"].public_key]
    sealed = dict(crypto.seal_to_many(data_key, readers))
    opened = crypto.unseal(sealed[cast.hospitals["A"].public_key], cast.hospitals["A"])
    recovered = b"".join(crypto.decrypt_stream(opened, [ciphertext]))
    scenario.check(
        recovered == plaintext, "hospital A opens its sealed key and decrypts the report"
    )
    try:
        crypto.unseal(sealed[cast.hospitals["A"].public_key], cast.hospitals["B"])
        scenario.check(False, "hospital B cannot open a key sealed to hospital A")
    except DecodeError:
        scenario.check(True, "hospital B, without a grant, cannot open the sealed data key")
    tampered = bytearray(ciphertext)
    tampered[len(tampered) // 2] ^= 1
    try:
        b"".join(crypto.decrypt_stream(opened, [bytes(tampered)]))
        scenario.check(False, "a tampered ciphertext is refused")
    except DecodeError:
        scenario.check(True, "one flipped bit in the stored ciphertext is detected and refused")


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's files here (default: a temporary folder, removed afterwards).",
)
def demo(folder: Path | None) -> None:
    """Run the paper's scenario, narrated and checked; exit 1 if any check fails."""
    started = time.monotonic()
    scenario = Scenario()
    cast = _cast()
    with tempfile.TemporaryDirectory(prefix="carechain-demo-") as temporary:
        where = folder or Path(temporary)
        where.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]carechain demo[/bold]: files in {where}")
        _identities(scenario, cast, where)
        _network(scenario, cast, where)
        _cosigning(scenario, cast)
        _envelope(scenario, cast)
    elapsed = time.monotonic() - started
    if scenario.failures:
        console.print(f"\n[red]{len(scenario.failures)} check(s) failed[/red] in {elapsed:.1f}s")
        sys.exit(1)
    console.print(f"\n[green]all checks passed[/green] in {elapsed:.1f}s")
