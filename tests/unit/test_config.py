"""Node configuration and genesis: valid files load; every bad one names file, field and fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from carechain.config.genesis import genesis_to_json, load_genesis, parse_genesis
from carechain.config.loading import ConfigError
from carechain.config.node import NodeConfig, load_node_config, save_node_config
from carechain.consensus.crypto import peer_id
from carechain.tests.strategies import deterministic_key


def _genesis_document(validators: int = 4) -> dict[str, Any]:
    return {
        "chain_id": "carechain-test",
        "genesis_time": "2026-11-30T00:00:00Z",
        "validators": [
            {
                "name": f"hospital-{i}",
                "public_key": deterministic_key(10 + i).public_key.hex(),
                "node_id": peer_id(deterministic_key(20 + i).public_key),
                "power": 10,
            }
            for i in range(validators)
        ],
        "institutions": [
            {
                "name": "trusted",
                "kind": "trusted_party",
                "public_key": deterministic_key(30).public_key.hex(),
            }
        ],
        "params": {"max_block_txs": 5000},
        "data_types": [
            {
                "name": "ketones",
                "title": "Blood ketones",
                "fhir_resource": "Observation",
                "loinc_codes": ["2514-8"],
            }
        ],
    }


def test_genesis_loads_and_round_trips(tmp_path: Path) -> None:
    genesis = parse_genesis(_genesis_document(), "genesis.json")
    assert genesis.governance_threshold == 3
    assert genesis.params.max_block_txs == 5000
    assert len(genesis.validators.validators) == 4
    path = tmp_path / "genesis.json"
    path.write_text(genesis_to_json(genesis))
    assert load_genesis(path) == genesis
    assert load_genesis(path).genesis_hash == genesis.genesis_hash


def _mutate(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


_DELETE = object()

GENESIS_ERRORS = [
    ("missing field", ("chain_id",), _DELETE, "chain_id: required field is missing"),
    (
        "wrong type",
        ("validators", 0, "power"),
        "10",
        "validators[0].power: Input should be a valid integer",
    ),
    ("unknown key", ("validators", 1, "powr"), 10, "validators[1].powr: unknown key"),
    ("unknown top-level key", ("chain",), "x", "chain: unknown key"),
    ("bad chain id", ("chain_id",), "Has Spaces", "chain_id: String should match pattern"),
    ("no timezone", ("genesis_time",), "2026-11-30T00:00:00", "needs a timezone"),
    ("bad time", ("genesis_time",), "yesterday", "expected an RFC 3339 time"),
    ("bad key hex", ("validators", 0, "public_key"), "zz", "validators[0].public_key"),
    ("bad node id", ("validators", 2, "node_id"), "12D3KooWnope", "validators[2].node_id"),
    ("zero power", ("validators", 0, "power"), 0, "greater than or equal to 1"),
    ("no validators", ("validators",), [], "validators: List should have at least 1 item"),
    ("unknown param", ("params", "max_blok_txs"), 1, "unknown parameter(s) ['max_blok_txs']"),
    (
        "param out of range",
        ("params", "max_block_bytes"),
        10,
        "params.max_block_bytes: expected an integer in [1024",
    ),
    ("threshold too high", ("governance_threshold",), 5, "exceeds the 4 validators"),
    (
        "redefined data type",
        ("data_types", 0, "name"),
        "glucose",
        "data_types: genesis data type 'glucose' redefines",
    ),
    ("bad institution kind", ("institutions", 0, "kind"), "bank", "institutions[0].kind"),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), GENESIS_ERRORS, ids=[c[0] for c in GENESIS_ERRORS]
)
def test_genesis_errors_name_the_field(
    case: str, path: tuple[Any, ...], value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_genesis(_mutate(_genesis_document(), path, value), "net/genesis.json")
    text = str(caught.value)
    assert text.startswith("net/genesis.json: "), text
    assert message in text, text


@pytest.mark.parametrize("column", ["name", "public_key", "node_id"])
def test_duplicate_validators_are_refused(column: str) -> None:
    document = _genesis_document()
    document["validators"][3][column] = document["validators"][1][column]
    with pytest.raises(ConfigError, match=r"validators\[3\] repeats .* of validators\[1\]"):
        parse_genesis(document, "genesis.json")


def test_genesis_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_genesis(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_genesis(broken)


def test_node_config_defaults_round_trip(tmp_path: Path) -> None:
    config = NodeConfig(moniker="hospital-a", validator=True)
    save_node_config(tmp_path, config)
    assert load_node_config(tmp_path) == config
    assert config.api.listen.startswith("127.0.0.1:"), "the API binds to loopback by default"


def test_test_defaults_are_short_and_valid() -> None:
    config = NodeConfig.for_tests(moniker="t")
    assert config.consensus.timeout_propose_ms < NodeConfig().consensus.timeout_propose_ms
    assert config.moniker == "t"


NODE_ERRORS = [
    ("[p2p]\nlisten = 5\n", "p2p.listen: Input should be a valid string"),
    (
        '[p2p]\nlisten = "tcp://1.2.3.4"\n',
        "p2p.listen: Value error, expected /ip4/<host>/tcp/<port>",
    ),
    ('[p2p]\npeers = ["/ip4/127.0.0.1/tcp/1"]\n', "must end with /p2p/<peer id>"),
    ('[p2p]\nlisten = "/ip4/999.1.1.1/tcp/1"\n', "is not an IP address"),
    ('[p2p]\nobservers = ["auditor"]\n', "p2p.observers: Value error, observers[0] 'auditor'"),
    ('[api]\nlisten = "localhost"\n', "api.listen: Value error, expected <host>:<port>"),
    ('[api]\nlistne = "x"\n', "api.listne: unknown key"),
    (
        "[consensus]\ntimeout_propose_ms = 100000\ntimeout_ms_max = 5000\n",
        "must not exceed timeout_ms_max",
    ),
    ("[consensus]\ntimeout_propose_ms = -1\n", "consensus.timeout_propose_ms"),
    ('[log]\nlevel = "loud"\n', "log.level: Input should be"),
    ('[blobs]\nbackend = "s3"\n', "needs s3_endpoint and s3_bucket"),
    ("moniker = \n", "not valid TOML"),
    ("[mystery]\n", "mystery: unknown key"),
]


@pytest.mark.parametrize(("text", "message"), NODE_ERRORS)
def test_node_config_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_node_config(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "config.toml")), str(caught.value)
    assert message in str(caught.value), str(caught.value)


def test_a_config_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    """Found by tests/fuzz/test_config.py: tomllib's UnicodeDecodeError escaped the loader."""
    (tmp_path / "config.toml").write_bytes(b"\xc0moniker = 'x'\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_node_config(tmp_path)


def test_missing_config_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="carechain init"):
        load_node_config(tmp_path)


def test_genesis_json_is_stable() -> None:
    genesis = parse_genesis(_genesis_document(), "genesis.json")
    assert json.loads(genesis_to_json(genesis))["validators"][0]["power"] == 10
    assert genesis_to_json(genesis) == genesis_to_json(
        parse_genesis(json.loads(genesis_to_json(genesis)), "g")
    )
