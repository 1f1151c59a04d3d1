"""The distribution lists every package folder, and code imports `carechain.X` only."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from carechain.consensus.ledger.errors import REASONS

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("consensus", "storage", "p2p", "node", "config", "cli", "tests")
DIRECT_IMPORT = re.compile(rf"^(import|from) ({'|'.join(TOP_LEVEL)})(\.|\s|$)")


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    listed = set(setuptools["packages"])
    on_disk = {
        "carechain." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
        if ".venv" not in init.parts
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - on_disk == set(), "these listed packages have no folder"
    mapped = setuptools["package-dir"]
    assert {mapped[f"carechain.{top}"] for top in TOP_LEVEL} == set(TOP_LEVEL)


def test_no_module_imports_a_top_level_folder_directly() -> None:
    offenders = []
    for top in TOP_LEVEL:
        for path in (ROOT / top).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if DIRECT_IMPORT.match(line.strip()):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


def test_readme_documents_every_rejection_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [code for code in REASONS if f"| `{code}` |" not in readme]
    assert missing == [], "add these reason codes to the README's table"
