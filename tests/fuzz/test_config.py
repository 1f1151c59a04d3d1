"""The config and genesis loaders fuzzed: a node's `config.toml` and a network's
`genesis.json`, damaged byte by byte or with any value of the document swapped for any other
JSON/TOML value, either load or are refused with a ConfigError that names the file; nothing
else escapes (a raw KeyError, TypeError or OverflowError would be a crash at start-up)."""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carechain.config.genesis import load_genesis
from carechain.config.loading import ConfigError
from carechain.config.node import CONFIG_FILE, load_node_config
from carechain.consensus.errors import CarechainError
from carechain.node.testnet import make_testnet
from carechain.tests.fuzz.mutate import budget, mutate

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (node,) = make_testnet(tmp_path_factory.mktemp("net"), 1)
    return node.home


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[path[0]] = _replaced(document[path[0]], path[1:], value)
    return copy


def _refused_cleanly(load: Any, path: Path) -> None:
    message = None
    try:
        load()
    except ConfigError as exc:
        message = str(exc)
    except CarechainError:
        pass
    assert message is None or str(path) in message, f"the refusal does not name the file: {message}"


FUZZ = settings(
    max_examples=budget(150),
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_a_genesis_with_any_value_swapped_loads_or_is_refused(home: Path, data: Any) -> None:
    original = json.loads((home / "genesis.json").read_text())
    where = data.draw(st.sampled_from(_paths(original)))
    document = _replaced(original, where, data.draw(JSON_VALUES))
    target = home.parent / "fuzzed-genesis.json"
    target.write_text(json.dumps(document))
    _refused_cleanly(lambda: load_genesis(target), target)


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_a_damaged_genesis_file_loads_or_is_refused(home: Path, rng: random.Random) -> None:
    target = home.parent / "damaged-genesis.json"
    target.write_bytes(mutate((home / "genesis.json").read_bytes(), (), rng))
    _refused_cleanly(lambda: load_genesis(target), target)


@FUZZ
@given(data=st.data())
def test_a_config_with_any_value_swapped_loads_or_is_refused(home: Path, data: Any) -> None:
    original = tomllib.loads((home / CONFIG_FILE).read_text())
    where = data.draw(st.sampled_from(_paths(original)))
    document = _replaced(original, where, data.draw(JSON_VALUES))
    fuzzed = home.parent / "fuzzed-home"
    fuzzed.mkdir(exist_ok=True)
    try:
        text = tomli_w.dumps(document if isinstance(document, dict) else {"value": document})
    except (TypeError, ValueError):
        return  # TOML cannot hold it (a None, a non-table root): no such file can exist
    (fuzzed / CONFIG_FILE).write_text(text)
    _refused_cleanly(lambda: load_node_config(fuzzed), fuzzed / CONFIG_FILE)


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_a_damaged_config_file_loads_or_is_refused(home: Path, rng: random.Random) -> None:
    fuzzed = home.parent / "damaged-home"
    fuzzed.mkdir(exist_ok=True)
    (fuzzed / CONFIG_FILE).write_bytes(mutate((home / CONFIG_FILE).read_bytes(), (), rng))
    _refused_cleanly(lambda: load_node_config(fuzzed), fuzzed / CONFIG_FILE)
