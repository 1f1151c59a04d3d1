"""Turning files into validated models, with errors that name the file, the field and what
is expected. Shared by the node configuration (TOML) and genesis (JSON) loaders."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from carechain.consensus.errors import InvalidInput

M = TypeVar("M", bound=pydantic.BaseModel)


class ConfigError(InvalidInput):
    """A configuration or genesis file is missing, unreadable or invalid."""

    code = "bad_config"

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        joined = "; ".join(problems)
        super().__init__(f"{path}: {joined}")


class StrictModel(pydantic.BaseModel):
    """Base for file models: unknown keys are errors, values are not silently coerced."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe_errors(error: pydantic.ValidationError) -> list[str]:
    """One line per problem: `field: what is wrong (got X)`."""
    lines = []
    for item in error.errors():
        where = _location(tuple(item["loc"]))
        kind = item["type"]
        if kind == "missing":
            lines.append(f"{where}: required field is missing")
        elif kind == "extra_forbidden":
            lines.append(f"{where}: unknown key (check its spelling and section)")
        else:
            got = repr(item.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            lines.append(f"{where}: {item['msg']} (got {got})")
    return lines


def validate(model: type[M], data: Any, path: Path | str) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(path, describe_errors(exc)) from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found (run `carechain init` to create it)"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:  # tomllib reads UTF-8 only
        raise ConfigError(path, [f"not UTF-8 text: {exc}"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"not valid JSON: {exc}"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
