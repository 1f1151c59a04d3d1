"""What every action on the patient's and institutions' side needs: the node's API client, the
chain it runs, the state it reads, and keys from the home folder's keystore.

The command line, the patient's agent service, the demo and the tests share it. The passphrase
of an encrypted key is asked for once, through the `passphrase` the caller gives (the command
line reads a file, the environment or a prompt), and only when such a key is first opened.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from carechain.config.genesis import parse_genesis
from carechain.consensus.crypto import PrivateKey, account_id, is_public_key, unseal
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import Genesis, InstitutionKind
from carechain.consensus.ledger import queries
from carechain.consensus.ledger.context import (
    RETIRED,
    ChainContext,
    epoch_key_key,
    trusted_parties,
)
from carechain.consensus.ledger.governance import apply_pending
from carechain.consensus.ledger.records import Account, InstitutionState, Vault
from carechain.consensus.ledger.state import Overlay, StateReader, Table
from carechain.consensus.types import Tx
from carechain.node.audit.access_report import TableReader
from carechain.node.wallet.client import ApiRequestError, Client, RemoteState
from carechain.node.wallet.keystore import KeystoreError, key_path, load_key, read_key_info

if TYPE_CHECKING:
    from carechain.node.light.client import LightClient

DAY_MS = 86_400_000


@dataclasses.dataclass
class FlowContext:
    home: Path
    client: Client
    passphrase: Callable[[], str] | None  # asked once, for the first encrypted key opened
    _genesis: Genesis | None = None
    _passphrase: str | None = None
    # with a light client, every state entry read is proved against a header it trusts from
    # the user's own genesis (`node/light/client.py`); an answer that does not verify raises
    light: LightClient | None = None

    @property
    def genesis(self) -> Genesis:
        if self.light is not None:
            return self.light.genesis  # the user's own copy, never the node's
        if self._genesis is None:
            self._genesis = parse_genesis(self.client.get("/v1/genesis"), "the node's genesis")
        return self._genesis

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def key(self, name: str) -> PrivateKey:
        path = key_path(self.home, name)
        if not read_key_info(path).encrypted:
            return load_key(path, None)
        if self._passphrase is None:
            if self.passphrase is None:
                raise KeystoreError(
                    f"{path} is encrypted and no passphrase was given",
                    hint="give the keystore passphrase",
                )
            self._passphrase = self.passphrase()
        return load_key(path, self._passphrase)

    def state(self) -> Overlay:
        if self.light is not None:
            return Overlay(self.light.state())
        return Overlay(RemoteState(self.client))

    def vaults_of(self, patient: bytes, state: StateReader | None = None) -> dict[bytes, Vault]:
        """The patient's vaults by id, one per data type the chain knows (read from `state`,
        by default the head's)."""
        data_types = ChainContext.from_genesis(self.genesis).data_types
        return queries.patient_vaults(self.state() if state is None else state, patient, data_types)

    def next_state(self) -> Overlay:
        """The state the next block's transactions start from: the head's, with the
        governance changes that take effect at the next height applied (a trusted party
        registered two blocks before reads every vault from then on). Whatever a transaction
        must match exactly, such as the members a vault's key is sealed to, is read here."""
        if self.light is not None:
            verified = self.light.state()  # the height it proved its entries at
            state, height = Overlay(verified), verified.trusted.height
        else:
            state, height = self.state(), int(self.client.status()["height"])
        apply_pending(state, height + 1)
        return state

    def now_ms(self) -> int:
        return max(int(time.time() * 1000), int(self.client.status()["last_block_time_ms"]) + 1)

    def expiry(self) -> int:
        return self.now_ms() + DAY_MS

    def nonce(self, account: bytes) -> int:
        found = self.state().load(Table.ACCOUNT, account, Account)
        return 1 if found is None else found.nonce + 1

    def rivals(self, tx: Tx) -> list[str]:
        """The ids of the other partials waiting at the node with `tx`'s account and nonce:
        whichever of them commits first, the node drops the rest (their nonce is spent)."""
        return [
            partial["id"]
            for partial in self.client.partials()
            if partial["id"] != tx.id.hex()
            and partial["account"] == tx.account.hex()
            and Tx.decode(bytes.fromhex(partial["tx"])).nonce == tx.nonce
        ]

    def account_of(self, key: PrivateKey) -> bytes:
        """The patient account `key` controls: the chain's index, which follows a replaced key
        1 (the account keeps its first key's address), or the key's own address before the
        registration commits."""
        found = self.state().get(Table.PATIENT_KEY, key.public_key)
        return found if found is not None else account_id(key.public_key)

    def sealing_keys(self, members: Iterable[bytes]) -> dict[bytes, bytes]:
        return sealing_keys(self.state(), members)

    def institution_of(self, key: bytes) -> bytes:
        """The institution (its first key, which names it on chain) that `key` signs and reads
        for now: `key` itself unless the institution rotated to it. A key an institution
        rotated away from acts for nobody: refused."""
        found = self.state().get(Table.INSTITUTION_KEY, key)
        if found == RETIRED:
            raise InvalidInput(
                f"key {key.hex()[:16]} was rotated away from: it signs and reads for nobody now",
                code="key_retired",
                hint="use the institution's key now (`carechain institution list`)",
            )
        return key if found is None else found

    def vault(self, vault_id: bytes) -> Vault:
        found = self.state().load(Table.VAULT, vault_id, Vault)
        if found is None:
            raise InvalidInput(f"no vault {vault_id.hex()} on chain", hint="check --vault")
        return found

    def trusted(self) -> frozenset[bytes]:
        return trusted_parties(self.next_state())

    def epoch_key(self, vault: Vault, key: PrivateKey) -> bytes:
        """The vault's current epoch key, from the copy sealed to `key` on chain (for an
        institution's key, the institution's copy)."""
        member = self.institution_of(key.public_key)
        sealed = self.state().get(
            Table.EPOCH_KEY, epoch_key_key(vault.vault_id, vault.epoch, member)
        )
        if sealed is None:
            raise InvalidInput(
                f"no epoch {vault.epoch} key of this vault is sealed to "
                f"{key.public_key.hex()[:16]}",
                hint="that key has no read access to the vault",
            )
        return unseal(sealed, key)

    def send(self, tx: Tx, *, wait: bool = True) -> dict[str, object]:
        """Submit; wait for the commit unless the transaction is partial."""
        answer = self.client.submit(tx)
        if answer["status"] == "partial" or not wait:
            return answer
        return self.client.wait_committed(tx.id)

    def send_sealed(self, build: Callable[[], Tx]) -> dict[str, object]:
        """Submit a transaction that seals a vault's key to exactly the members the chain
        requires (a vault's creation, a revocation), built by `build` from the state it reads.
        Those members can change between the read and the block that executes it: a
        governance change to the trusted parties takes effect, a grant begins or ends. The
        chain then refuses it (`bad_members`); it is built again once the next block has
        committed, and sent again, once. A second refusal says why and when to retry."""
        try:
            return self.send(build())
        except ApiRequestError as exc:
            if exc.code != "bad_members":
                raise
            seen = int(self.client.status()["height"])
        self._wait_for_height(seen + 1)
        try:
            return self.send(build())
        except ApiRequestError as exc:
            if exc.code != "bad_members":
                raise
            raise InvalidInput(
                f"the chain refused it twice: {exc.detail}",
                code="bad_members",
                hint="the members who must hold the vault's key changed while it was in flight "
                "(a governance change to the trusted parties takes effect two blocks after it "
                "commits; a grant began or ended): run the command again after the next block "
                "(`carechain status` shows the height)",
            ) from None

    def _wait_for_height(self, height: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while int(self.client.status()["height"]) < height and time.monotonic() < deadline:
            time.sleep(0.2)


def sealing_keys(state: Overlay, members: Iterable[bytes]) -> dict[bytes, bytes]:
    """Each member (as a vault names it) with the key it reads with now: an institution that
    rotated its key reads with its new one; anyone else with the key named."""
    keys = {}
    for member in members:
        found = state.load(Table.INSTITUTION, member, InstitutionState)
        keys[member] = member if found is None else found.current_key
    return keys


def institution_kind(context: FlowContext, key: bytes) -> InstitutionKind | None:
    """What kind of institution `key` signs for now (None: not an institution's key)."""
    found = context.state().load(Table.INSTITUTION, context.institution_of(key), InstitutionState)
    return None if found is None else found.kind


def hex_bytes(value: str, size: int, what: str) -> bytes:
    """Parse `size` bytes of hex, or say what the option expects."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise InvalidInput(f"{what} must be {2 * size} hex characters")
    return raw


ID_PREFIX_MIN: Final = 8  # hex characters: what a table shows is enough to name an id


def unique_id(text: str, candidates: Iterable[bytes], size: int, what: str) -> bytes:
    """An id given whole (2 x `size` hex characters) or by a prefix of at least 8, as the
    human tables print them: the one of `candidates` it names. Says which ids a prefix
    matches when it names none or several."""
    text = text.strip().lower()
    if len(text) == 2 * size:
        return hex_bytes(text, size, what)
    if len(text) < ID_PREFIX_MIN or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInput(
            f"{what} must be {2 * size} hex characters, or a prefix of at least "
            f"{ID_PREFIX_MIN} that names one id"
        )
    matches = sorted({c for c in candidates if c.hex().startswith(text)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InvalidInput(f"{what} {text}: no such id here", hint="list them to see the ids")
    shown = ", ".join(m.hex()[:16] for m in matches[:5])
    raise InvalidInput(f"{what} {text} names {len(matches)} ids ({shown}): give more of it")


def institution_names(reader: TableReader) -> dict[bytes, str]:
    """Every institution's name by key (genesis's and governance's), for human tables."""
    return {
        key: InstitutionState.decode(raw).institution.name
        for key, raw in reader.table_entries(Table.INSTITUTION)
    }


def public_key_arg(value: str, what: str) -> bytes:
    """Parse an Ed25519 public key given in hex, or say what is wrong with it."""
    raw = hex_bytes(value, 32, what)
    if not is_public_key(raw):
        raise InvalidInput(
            f"{what} {value[:16]}... is 64 hex characters but not an Ed25519 public key",
            hint="copy the key from `carechain keys show`",
        )
    return raw


def patient_account(key: PrivateKey) -> bytes:
    return account_id(key.public_key)
