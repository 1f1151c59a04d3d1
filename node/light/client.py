"""A light client: reads a node's answers and believes only what verifies.

It starts from the user's own copy of genesis (the trust root: its validators and its state,
computed here) and keeps every header it came to trust in `<home>/trusted.json` (the newest
`TRUSTED_KEPT`). `sync` moves trust to the primary node's head (skipping verification with
bisection, `consensus/light/verifier.py`), then asks each witness for the same height: a witness
that serves another header which verifies from the same trusted height is proof of a fork, kept
as evidence in `<home>/evidence-<height>.json` and raised as `ForkDetected`; a witness whose
header does not verify is reported and ignored. `get` reads one state entry with its proof at a
trusted height and checks it against that height's state root.

Any answer that does not verify raises `VerificationError` naming what failed; nothing is
returned unless it verified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.queries import MissingEntry
from carechain.consensus.ledger.state import StateReader, Table
from carechain.consensus.ledger.state_proof import ProofError, StateProof
from carechain.consensus.light.verifier import (
    Clock,
    LightBlock,
    Trusted,
    VerificationError,
    sync_to,
    verify_entry,
)
from carechain.consensus.types import BlockHeader
from carechain.node.wallet.client import ApiRequestError, Client

T = TypeVar("T")

TRUSTED_KEPT: Final = 1000
WITNESS_LEAD_MAX: Final = 3  # heights a witness may be ahead of the primary without a warning
TRUSTING_PERIOD_MS_DEFAULT: Final = 14 * 24 * 3600 * 1000


class ForkDetected(VerificationError):
    """Two nodes served different headers for one height, each certified from what the client
    trusts: validators signed two histories. The evidence is kept on disk."""

    code = "fork_detected"


class LightStoreError(InvalidInput):
    code = "light_store_unreadable"


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedEntry:
    table: Table
    key: bytes
    value: bytes | None  # None: proved absent
    trusted: Trusted  # the height it was proved at


@dataclasses.dataclass(frozen=True, slots=True)
class Verified(Generic[T]):
    """A whole answer read from entries that each verified at one trusted height."""

    value: T
    trusted: Trusted
    entries: int  # how many proved entries it was read from


class VerifiedState:
    """A `StateReader` whose every entry is proved at one trusted height: the wallet and the
    patient's agent read through it and so act only on what verified."""

    def __init__(self, client: LightClient, trusted: Trusted) -> None:
        self.client = client
        self.trusted = trusted

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self.client.get_at(self.trusted, table, key).value


class ProvedEntries:
    """A `StateReader` over the entries of a node's answer that verified: a read of any
    other entry means the answer left it out."""

    def __init__(self, entries: dict[tuple[Table, bytes], bytes | None]) -> None:
        self.entries = entries

    def get(self, table: Table, key: bytes) -> bytes | None:
        try:
            return self.entries[table, key]
        except KeyError:
            raise MissingEntry(table, key, "the answer does not prove it") from None


def _trusted_json(trusted: Trusted) -> dict[str, Any]:
    return {
        field.name: value.hex() if isinstance(value, bytes) else value
        for field in dataclasses.fields(trusted)
        for value in [getattr(trusted, field.name)]
    }


def _trusted_of(document: dict[str, Any]) -> Trusted:
    return Trusted(
        chain_id=document["chain_id"],
        height=int(document["height"]),
        block_hash=bytes.fromhex(document["block_hash"]),
        time_ms=int(document["time_ms"]),
        state_root=bytes.fromhex(document["state_root"]),
        next_validator_set_hash=bytes.fromhex(document["next_validator_set_hash"]),
        signed_power=int(document["signed_power"]),
        total_power=int(document["total_power"]),
    )


class TrustedStore:
    """The headers the client trusts, newest last, in one JSON file written atomically."""

    def __init__(self, home: Path, genesis: Genesis) -> None:
        self.path = home / "trusted.json"
        self.genesis_hash = genesis.hash().hex()
        self.trusted: list[Trusted] = [Trusted.of_genesis(genesis)]
        if self.path.exists():
            self._load(genesis)

    def _load(self, genesis: Genesis) -> None:
        try:
            document = json.loads(self.path.read_text())
            if document["genesis"] != self.genesis_hash:
                raise LightStoreError(
                    f"{self.path} was made from another genesis than the one given",
                    hint="use the genesis it was made from, or another --home",
                )
            kept = [_trusted_of(entry) for entry in document["trusted"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise LightStoreError(
                f"{self.path} is unreadable: {exc}", hint="delete it to start from genesis again"
            ) from None
        self.trusted = sorted({t.height: t for t in [*self.trusted, *kept]}.values(), key=_height)

    @property
    def newest(self) -> Trusted:
        return self.trusted[-1]

    def at(self, height: int) -> Trusted | None:
        return next((t for t in self.trusted if t.height == height), None)

    def add(self, newly: list[Trusted]) -> None:
        by_height = {t.height: t for t in [*self.trusted, *newly]}
        ordered = sorted(by_height.values(), key=_height)
        self.trusted = [ordered[0], *ordered[1:][-TRUSTED_KEPT:]]  # genesis always stays
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two processes (the agent and a command) may share a home
        temporary = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(
            json.dumps(
                {"genesis": self.genesis_hash, "trusted": [_trusted_json(t) for t in self.trusted]}
            )
        )
        os.replace(temporary, self.path)


def _height(trusted: Trusted) -> int:
    return trusted.height


class NodeSource:
    """Light blocks and proved entries from one node's API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def name(self) -> str:
        return self.client.base_url

    def head(self) -> int:
        status = self.client.status()
        try:
            height = status["height"]
            if not isinstance(height, int) or isinstance(height, bool) or height < 0:
                raise TypeError(f"height {height!r}")
        except (KeyError, TypeError) as exc:
            raise VerificationError(f"{self.name}: a malformed status: {exc}") from None
        return height

    def light_block(self, height: int) -> LightBlock:
        answer = self.client.get(f"/v1/blocks/{height}/light")
        try:
            return LightBlock.decode(
                bytes.fromhex(answer["header"]),
                bytes.fromhex(answer["certificate"]),
                bytes.fromhex(answer["validators"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"{self.name}: a malformed light block: {exc}") from None

    def proved(self, table: Table, key: bytes, height: int) -> Any:
        return self.client.get(f"/v1/state/{table.label}/{key.hex()}?proof=true&height={height}")

    def proved_set(self, path: str, height: int) -> Any:
        """A list route's proved entries (`path` may carry its own query)."""
        joiner = "&" if "?" in path else "?"
        return self.client.get(f"{path}{joiner}proof=true&height={height}")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LightClient:
    def __init__(
        self,
        genesis: Genesis,
        home: Path,
        primary: NodeSource,
        witnesses: list[NodeSource] | None = None,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        trusting_period_ms: int = TRUSTING_PERIOD_MS_DEFAULT,
    ) -> None:
        self.genesis = genesis
        self.home = home
        self.primary = primary
        self.witnesses = list(witnesses or [])
        self.clock_ms = clock_ms
        self.trusting_period_ms = trusting_period_ms
        self.store = TrustedStore(home, genesis)
        self.warnings: list[str] = []  # witnesses that misbehaved, for the caller to show
        # the agent's service reads from several threads at once: one sync at a time
        self._syncing = threading.RLock()

    def _clock(self) -> Clock:
        return Clock(self.clock_ms(), self.trusting_period_ms)

    def sync(self, height: int | None = None) -> Trusted:
        """Trust the primary's head (or `height`); the newest trusted header after it."""
        with self._syncing:
            return self._sync(height)

    def _sync(self, height: int | None) -> Trusted:
        base = self.store.newest
        if height is None:
            target = self._answer(self.primary.head)
            if target < base.height:
                # a node that says its head is older than what the client already trusts
                # withholds the newer state (a recovery started since, a grant revoked)
                raise VerificationError(
                    f"{self.primary.name} says its head is height {target}, below height "
                    f"{base.height} this client already trusts: it lags or withholds newer "
                    "blocks",
                    code="stale_head",
                    hint="ask another node (--api), or wait until it has caught up",
                )
        else:
            target = height
        known = self.store.at(target)
        if known is not None:
            return known
        if target <= base.height:
            raise VerificationError(
                f"height {target} is below the newest trusted {base.height} and was not kept",
                hint="ask for a newer height",
            )
        newly = sync_to(base, target, self._fetch(self.primary), self._clock())
        self._cross_check(base, newly[-1])
        self.store.add(newly)
        return newly[-1]

    def get(self, table: Table, key: bytes) -> VerifiedEntry:
        """One entry (or its absence) at the newest height the primary serves, verified."""
        return self.get_at(self.sync(), table, key)

    def state(self) -> VerifiedState:
        """The state at the primary's head, each entry read verified at that one height."""
        return VerifiedState(self, self.sync())

    def get_at(self, trusted: Trusted, table: Table, key: bytes) -> VerifiedEntry:
        """One entry (or its absence) at the trusted height `trusted`, verified."""
        answer = self._answer(lambda: self.primary.proved(table, key, trusted.height))
        with self._reading("a proved entry"):
            self._check_height(answer, trusted)
            raw = answer["value"]
            value = None if raw is None else bytes.fromhex(raw)
            proof = StateProof.from_json(answer["proof"])
        verify_entry(trusted, table, key, value, proof)
        return VerifiedEntry(table, key, value, trusted)

    def query(self, path: str, read: Callable[[StateReader], T]) -> Verified[T]:
        """A whole answer: `read` (a query of `consensus/ledger/queries.py`) run over the
        entries the primary proved for list route `path` at the newest trusted height. Each
        entry must verify, and every entry `read` needs must be among them: an answer that
        leaves one out is refused (`answer_incomplete`), never shown short."""
        trusted = self.sync()
        answer = self._answer(lambda: self.primary.proved_set(path, trusted.height))
        entries: dict[tuple[Table, bytes], bytes | None] = {}
        with self._reading("a proved answer"):
            self._check_height(answer, trusted)
            listed = answer["entries"]
            if not isinstance(listed, list):
                raise TypeError("entries must be a list")
            for item in listed:
                table = Table.of_label(item["table"])
                if table is None:
                    raise ValueError(f"no state table {item['table']!r}")
                key = bytes.fromhex(item["key"])
                raw = item["value"]
                value = None if raw is None else bytes.fromhex(raw)
                verify_entry(trusted, table, key, value, StateProof.from_json(item["proof"]))
                entries[table, key] = value
        try:
            result = read(ProvedEntries(entries))
        except MissingEntry as exc:
            raise VerificationError(
                f"{self.primary.name} left out of its answer what it depends on: {exc}",
                code="answer_incomplete",
            ) from None
        except CarechainError as exc:  # a proved entry that does not decode
            raise VerificationError(f"{self.primary.name}: {exc}", code=exc.code) from None
        return Verified(result, trusted, len(entries))

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Turns any fault in a node's answer into a VerificationError naming it."""
        try:
            yield
        except VerificationError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VerificationError(f"{self.primary.name}: a malformed {what}: {exc}") from None
        except (ProofError, CarechainError) as exc:
            raise VerificationError(f"{self.primary.name}: {exc}", code=exc.code) from None

    def _check_height(self, answer: Any, trusted: Trusted) -> None:
        """The answer is for the trusted height, with that height's header if any."""
        if not isinstance(answer, dict):
            raise TypeError("an answer must be an object")
        if answer["height"] != trusted.height:
            raise VerificationError(
                f"{self.primary.name} answered for height {answer['height']}, not {trusted.height}"
            )
        if answer["header"] is not None:
            header = BlockHeader.decode(bytes.fromhex(answer["header"]))
            if header.hash() != trusted.block_hash:
                raise VerificationError(
                    f"{self.primary.name} sent a header for height {trusted.height} that "
                    "is not the one trusted"
                )

    # -- the shell's parts ------------------------------------------------------------------
    def _fetch(self, source: NodeSource) -> Callable[[int], LightBlock]:
        return lambda height: self._answer(lambda: source.light_block(height))

    def _answer(self, call: Callable[[], Any]) -> Any:
        """A node's answer, or VerificationError when it answers with an error."""
        try:
            return call()
        except ApiRequestError as exc:
            raise VerificationError(
                f"{self.primary.name} could not serve what the light client needs: {exc}",
                code=exc.code,
            ) from None

    def _cross_check(self, base: Trusted, target: Trusted) -> None:
        """Every witness must serve the same header at the target height."""
        for witness in self.witnesses:
            try:
                theirs = witness.light_block(target.height)
            except (ApiRequestError, InvalidInput) as exc:
                self.warnings.append(f"witness {witness.name} did not answer: {exc}")
                continue
            if theirs.header.hash() == target.block_hash:
                self._compare_heads(witness, target)
                continue
            try:
                sync_to(base, target.height, self._fetch(witness), self._clock())
            except VerificationError as exc:
                self.warnings.append(f"witness {witness.name} served a header that fails: {exc}")
                continue
            self._keep_evidence(target, witness, theirs)

    def _compare_heads(self, witness: NodeSource, target: Trusted) -> None:
        """A witness far ahead of the primary means the primary lags or withholds blocks."""
        try:
            theirs = witness.head()
        except (ApiRequestError, InvalidInput) as exc:
            self.warnings.append(f"witness {witness.name} did not say its head: {exc}")
            return
        if theirs > target.height + WITNESS_LEAD_MAX:
            self.warnings.append(
                f"witness {witness.name} is at height {theirs}, {self.primary.name} serves "
                f"{target.height}: it lags or withholds newer blocks; ask {witness.name}"
            )

    def _keep_evidence(self, target: Trusted, witness: NodeSource, theirs: LightBlock) -> None:
        ours = self.primary.light_block(target.height)
        path = self.home / f"evidence-{target.height}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "height": target.height,
                    "primary": {"node": self.primary.name, **_block_json(ours)},
                    "witness": {"node": witness.name, **_block_json(theirs)},
                },
                indent=2,
            )
        )
        raise ForkDetected(
            f"height {target.height}: {self.primary.name} and {witness.name} serve two "
            "different headers, both certified: validators signed two histories",
            hint=f"evidence kept in {path}; tell the network's coordinator",
        )


def _block_json(block: LightBlock) -> dict[str, str]:
    return {
        "header": block.header.encode().hex(),
        "certificate": block.certificate.encode().hex(),
        "validators": block.validators.encode().hex(),
    }
