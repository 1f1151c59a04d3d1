"""A lost patient key's recovery from the signers' side (`carechain recovery ...`): start it,
cancel it, see it pending, and finish it, which unseals every epoch key of every vault of the
patient with a signer's own copy (the remaining patient key holds them all; a trusted party
holds those of every epoch made while it was registered) and seals them to the replacement.
The ledger's rules are in `consensus/ledger/recovery.py`."""

from __future__ import annotations

from typing import Final

from carechain.consensus import crypto
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.bodies import VaultHandover
from carechain.consensus.ledger.context import epoch_key_key, required_members
from carechain.consensus.ledger.records import Recovery, Vault
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.node.wallet.context import FlowContext, sealing_keys

# Past epoch keys per `epoch.share`: about 90 bytes each, well inside the default 300 KiB.
SHARE_BATCH: Final = 2000


def pending_recovery(context: FlowContext, patient: bytes) -> Recovery | None:
    return context.state().load(Table.RECOVERY, patient, Recovery)


def recovery_summary(recovery: Recovery) -> dict[str, object]:
    """A pending recovery as `recovery list` and `audit report` show it (JSON)."""
    return {
        "lost": recovery.lost.hex(),
        "replacement": recovery.replacement.hex(),
        "started_height": recovery.started_height,
        "ready_ms": recovery.ready_ms,
        "path": "fast" if recovery.fast else "slow",
    }


def start_recovery(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    patient: bytes,
    lost: bytes,
    replacement: bytes,
) -> Tx:
    draft = builders.start_recovery(
        context.chain_id, patient, context.nonce(patient), context.expiry(),
        lost=lost, replacement=replacement,
    )  # fmt: skip
    return draft.signed(*keys)


def cancel_recovery(context: FlowContext, keys: list[crypto.PrivateKey], patient: bytes) -> Tx:
    recovery = pending_or_refuse(context, patient)
    draft = builders.cancel_recovery(
        context.chain_id, patient, context.nonce(patient), context.expiry(),
        replacement=recovery.replacement,
    )  # fmt: skip
    return draft.signed(*keys)


def finish_recovery(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    patient: bytes,
    *,
    defer_old_epochs: bool = False,
) -> Tx:
    """The finish of `patient`'s pending recovery, signed by `keys`: every vault handed over
    (each epoch's key sealed to the replacement, a new epoch sealed to who reads now). With
    `defer_old_epochs`, the past epochs' keys are left out (a patient with so many epochs that
    the finish would exceed the chain's max_tx_bytes): `share_missing_epochs` sends them
    after the finish commits."""
    recovery = pending_or_refuse(context, patient)
    state = context.next_state()
    vaults = list(context.vaults_of(patient).values())
    handovers = recovery_handovers(
        state, vaults, recovery, keys, context.now_ms(), defer_old=defer_old_epochs
    )
    parts = [handover for handover, _ in handovers.values()]
    draft = builders.finish_recovery(
        context.chain_id, patient, context.nonce(patient), context.expiry(), parts
    )
    return draft.signed(*keys)


def fits(context: FlowContext, tx: Tx) -> bool:
    return len(tx.encode()) <= context.genesis.params.max_tx_bytes


def share_missing_epochs(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    patient: bytes,
    member: bytes,
    batch: int = SHARE_BATCH,
) -> int:
    """Send `member` (one of the patient's keys) every past epoch key of every vault it holds
    no copy of, `batch` per `epoch.share` transaction, each committed before the next; how
    many were shared. Run again, it sends what is still missing (nothing, once done)."""
    shared = 0
    for vault in context.vaults_of(patient).values():
        state = context.state()
        missing = [
            epoch
            for epoch in range(1, vault.epoch + 1)
            if state.get(Table.EPOCH_KEY, epoch_key_key(vault.vault_id, epoch, member)) is None
        ]
        for run in _runs(missing, batch):
            draft = builders.share_epochs(
                context.chain_id, vault.vault_id, context.nonce(vault.vault_id),
                context.expiry(), member=member, first_epoch=run[0],
                epoch_keys=[epoch_key_of(state, vault, epoch, keys) for epoch in run],
            )  # fmt: skip
            context.send(draft.signed(*keys))
            shared += len(run)
    return shared


def _runs(epochs: list[int], batch: int) -> list[list[int]]:
    """Consecutive epochs in runs of at most `batch` (an `epoch.share` names its first)."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and runs[-1][-1] == epoch - 1 and len(runs[-1]) < batch:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    return runs


def recovery_handovers(
    state: Overlay,
    vaults: list[Vault],
    recovery: Recovery,
    keys: list[crypto.PrivateKey],
    now_ms: int,
    *,
    defer_old: bool = False,
) -> dict[bytes, tuple[VaultHandover, bytes]]:
    """Each vault's handover and its new epoch key, by vault id: its epoch keys unsealed with
    the first of `keys` that holds a copy, sealed to the replacement; a new epoch for the
    members who read it now, the replacement in the lost key's place."""
    handovers = {}
    for vault in vaults:
        epoch_keys = all_epoch_keys(state, vault, keys)
        members = {
            recovery.replacement if key == recovery.lost else key
            for key in required_members(state, vault, now_ms)
        }
        handovers[vault.vault_id] = builders.vault_handover(
            vault.vault_id,
            epoch_keys,
            recovery.replacement,
            sealing_keys(state, members),
            defer_old=defer_old,
        )
    return handovers


def pending_or_refuse(context: FlowContext, patient: bytes) -> Recovery:
    recovery = pending_recovery(context, patient)
    if recovery is None:
        raise InvalidInput(
            f"no recovery of account {crypto.encode_address(patient)} is pending",
            code="no_recovery",
            hint="`carechain recovery start` starts one",
        )
    return recovery


def all_epoch_keys(state: Overlay, vault: Vault, keys: list[crypto.PrivateKey]) -> list[bytes]:
    """The vault's keys of epochs 1..E, each unsealed with the first of `keys` holding a copy."""
    return [epoch_key_of(state, vault, epoch, keys) for epoch in range(1, vault.epoch + 1)]


def epoch_key_of(state: Overlay, vault: Vault, epoch: int, keys: list[crypto.PrivateKey]) -> bytes:
    """The vault's key of `epoch`, unsealed with the first of `keys` that holds a copy."""
    for key in keys:
        sealed = state.get(Table.EPOCH_KEY, epoch_key_key(vault.vault_id, epoch, key.public_key))
        if sealed is not None:
            return crypto.unseal(sealed, key)
    raise InvalidInput(
        f"no signing key holds epoch {epoch} of vault {vault.vault_id.hex()}",
        hint="sign with a key that read the vault then: the patient's (or its remaining one), "
        "a full guardian's, or a trusted party registered when that epoch began",
    )
