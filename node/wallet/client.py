"""A small synchronous client for the node's HTTP API (CLI, demo, agent, tests).

`RemoteState` reads raw ledger state through the API, so the ledger's own typed readers
(`Overlay(...).load`) work against a remote node exactly as against a local store."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from carechain.consensus.errors import DecodeError, InvalidInput
from carechain.consensus.ledger.blob_access import REQUEST_HEADER
from carechain.consensus.ledger.state import Table
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.types import Block, CommitCertificate, CommitSignature, Tx, TxSignature


class ApiRequestError(InvalidInput):
    """The node answered with an error (its reason code is `code`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}", code=code)
        self.status = status
        self.detail = message


class NodeUnreachable(InvalidInput):
    code = "node_unreachable"


def api_address(home: Path) -> str:
    """The API address a running node of `home` wrote, or why there is none."""
    path = home / "data" / "api.address"
    if path.exists():
        return path.read_text().strip()
    if not (home / "config.toml").exists():
        raise NodeUnreachable(
            f"{home} is not a carechain home (it has no config.toml)",
            hint="check --home, or give the node's --api URL",
        )
    raise NodeUnreachable(
        f"no running node at {home}", hint=f"start it: carechain start --home {home}"
    )


class Client:
    def __init__(self, base_url: str, timeout_s: float = 30) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise NodeUnreachable(f"{base_url!r} is not an http(s) URL of a carechain node")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """JSON in and out; raw bytes out for an octet-stream answer (or any answer, when
        `headers` asks for another media type)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {
            "Content-Type": "application/octet-stream" if raw is not None else "application/json",
            **(headers or {}),
        }
        binary = "Accept" in headers
        url = self.base_url + path  # http(s) only: checked in __init__
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            # the URL is the operator's own node (http on loopback by default)
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                payload = response.read()
                if binary or response.headers.get_content_type() == "application/octet-stream":
                    return payload
                return json.loads(payload) if payload else None
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                error = {"error": "http_error", "message": str(exc)}
            raise ApiRequestError(
                exc.code, error.get("error", "error"), error.get("message", "")
            ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(f"cannot reach the node at {self.base_url}: {exc}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/v1/status")
        return result

    def submit(self, tx: Tx) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/txs", {"tx": tx.encode().hex()})
        return result

    def submit_batch(self, txs: list[Tx]) -> list[dict[str, Any]]:
        """Submit up to 1,000 transactions at once; each one's result, in order (`id` and
        `status`, or `error` and `message`)."""
        body = {"txs": [tx.encode().hex() for tx in txs]}
        results: list[dict[str, Any]] = self.request("POST", "/v1/txs/batch", body)["results"]
        return results

    def check(self, tx: Tx) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/txs/check", {"tx": tx.encode().hex()})
        return result

    def tx_status(self, tx_id: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/v1/txs/{tx_id.hex()}")
        return result

    def wait_committed(self, tx_id: bytes, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = self.tx_status(tx_id)
            except ApiRequestError as exc:
                if exc.status != 404:
                    raise
                status = {"status": "unknown"}
            if status["status"] == "committed":
                return status
            if status["status"] == "rejected":
                raise ApiRequestError(
                    400,
                    status.get("reason", "rejected"),
                    status.get("message") or "the transaction was rejected",
                )
            if time.monotonic() > deadline:
                raise NodeUnreachable(
                    f"transaction {tx_id.hex()[:16]} not committed after {timeout_s}s "
                    f"({status['status']})"
                )
            time.sleep(0.05)

    def partials(self, awaiting: bytes | None = None) -> list[dict[str, Any]]:
        query = f"?awaiting={awaiting.hex()}" if awaiting else ""
        result: list[dict[str, Any]] = self.get(f"/v1/partials{query}")["partials"]
        return result

    def cosign(self, tx_id: bytes, signature: TxSignature) -> dict[str, Any]:
        body = {"public_key": signature.public_key.hex(), "signature": signature.signature.hex()}
        result: dict[str, Any] = self.request(
            "POST", f"/v1/partials/{tx_id.hex()}/signatures", body
        )
        return result

    def blob_put(self, data: bytes) -> str:
        return str(self.request("POST", "/v1/blobs", raw=data)["cid"])

    def gateway(self, cid: str, request: bytes | None, media: str) -> bytes:
        """`GET /ipfs/{cid}` (the IPFS trustless gateway) as `media` (a CAR or a raw block),
        for the reader who signed blob request `request` (None: unsigned, refused)."""
        headers = {"Accept": media}
        if request is not None:
            headers[REQUEST_HEADER] = request.hex()
        result: bytes = self.request("GET", f"/ipfs/{cid}", headers=headers)
        return result

    def blob_fetch(self, request: bytes) -> bytes:
        result: bytes = self.request("POST", "/v1/blobs/fetch", {"request": request.hex()})
        return result


# Entries per page of `GET /v1/state/{table}` (the route's most).
STATE_PAGE = 10_000


class RemoteState:
    """A ledger `StateReader` over the API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, table: Table, key: bytes) -> bytes | None:
        try:
            return bytes.fromhex(self.client.get(f"/v1/state/{table.label}/{key.hex()}")["value"])
        except ApiRequestError as exc:
            if exc.status == 404:
                return None
            raise

    def table_entries(self, table: Table, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Every entry of `table` under `prefix`, in key order, a page of 10,000 at a time."""
        entries: list[tuple[bytes, bytes]] = []
        while True:
            after = f"&after={entries[-1][0].hex()}" if entries else ""
            path = f"/v1/state/{table.label}?prefix={prefix.hex()}&limit={STATE_PAGE}"
            page = self.client.get(path + after)["entries"]
            entries.extend((bytes.fromhex(k), bytes.fromhex(v)) for k, v in page)
            if len(page) < STATE_PAGE:
                return entries


class ApiChain:
    """A node's chain read through its API, for replays (`node.audit.replay.ChainSource`)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.state = _ApiState(client)
        self._last: tuple[int, dict[str, Any]] | None = None

    @property
    def height(self) -> int:
        return int(self.client.status()["height"])

    def _answer(self, height: int) -> dict[str, Any]:
        """The node's answer for one height (block, certificate and late precommits are read
        from one answer, so the replay asks once per height)."""
        if self._last is None or self._last[0] != height:
            result: dict[str, Any] = self.client.get(f"/v1/blocks/{height}")
            self._last = (height, result)
        return self._last[1]

    def block(self, height: int) -> Block:
        # as large as any genesis allows: the replay checks it against the auditor's genesis
        data = bytes.fromhex(self._answer(height)["block"])
        return Block.decode(data, max_bytes=LIMITS_AT_CAP.block_bytes)

    def certificate(self, height: int) -> CommitCertificate:
        return CommitCertificate.decode(bytes.fromhex(self._answer(height)["certificate"]))

    def late_precommits(self, height: int) -> tuple[CommitSignature, ...] | None:
        late = self._answer(height).get("late_precommits")
        if late is None:
            return None  # a node from before late votes were kept
        try:
            return tuple(
                CommitSignature(bytes.fromhex(e["validator"]), bytes.fromhex(e["signature"]))
                for e in late
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"height {height}: late precommits are malformed: {exc}") from None


class _ApiState:
    def __init__(self, client: Client) -> None:
        self.remote = RemoteState(client)

    def entries(self) -> Iterator[tuple[Table, bytes, bytes]]:
        for table in Table:
            for key, value in self.remote.table_entries(table):
                yield table, key, value
