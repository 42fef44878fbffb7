"""The dependency rule of the layout: app -> handlers -> domain, and domain is pure.

Read from the source (every import statement, at any depth), so an import hidden inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What pure code may use: deterministic computation only. No I/O, no asyncio, no clock, no randomness.
PURE = frozenset(
    {"__future__", "bisect", "collections", "dataclasses", "difflib", "enum", "functools", "hashlib", "itertools"}
    | {"json", "math", "msgspec", "re", "string", "typing", "unicodedata", "domain"}
)


def imports(layer: str) -> list[tuple[str, str]]:
    """(module file, top-level package imported) for every import in the layer."""
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name.split(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path.name, node.module.split(".")[0]))
    return found


def test_the_layers_hold_modules() -> None:
    assert len(imports("domain")) > 50 and len(imports("handlers")) > 50 and len(imports("app")) > 50


def test_domain_imports_only_pure_modules() -> None:
    impure = [(module, name) for module, name in imports("domain") if name not in PURE]
    assert not impure, f"domain/ must stay pure: {impure}"


@pytest.mark.parametrize("layer, above", [("handlers", {"app"}), ("domain", {"app", "handlers"})])
def test_no_layer_imports_one_above_it(layer: str, above: set[str]) -> None:
    upward = [(module, name) for module, name in imports(layer) if name in above]
    assert not upward, f"{layer}/ imports {above}: {upward}"
