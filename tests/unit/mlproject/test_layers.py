"""The layout shows the flow: imports only go down data → models → evaluation/registry → training →
entry points/serving → loop → cli, and the adapters in integrations/ depend on nothing above
mlproject/state.py. Checked on the source, so a new upward import fails here, not in review."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAYER = {"state": 0, "data": 1, "models": 2, "evaluation": 3, "registry": 3, "training": 4,
         "entrypoints": 5, "serving": 5, "loop": 6, "cli": 7}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mlproject" and len(parts) > 1 else None


def sources(folder: str):
    return sorted((REPO / folder).rglob("*.py"))


def layer_of(path: Path) -> str:
    return path.relative_to(REPO / "mlproject").parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", [p for p in sources("mlproject") if layer_of(p) != "__init__"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_mlproject_imports_only_go_down(path):
    own = layer_of(path)
    assert own in LAYER, f"give {own} a place in LAYER"
    upward = [m for m in imported_modules(path) if (p := package_of(m)) in LAYER and LAYER[p] > LAYER[own]]
    assert not upward, f"{path.relative_to(REPO)} ({own}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("path", sources("integrations"), ids=lambda p: str(p.relative_to(REPO)))
def test_adapters_depend_only_on_the_state_module(path):
    used = [m for m in imported_modules(path) if m.startswith("mlproject") and m != "mlproject.state"]
    assert not used, f"{path.relative_to(REPO)} is an adapter but imports {used}"


def test_every_package_has_a_layer():
    packages = {p.name for p in (REPO / "mlproject").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYER), f"give {sorted(packages - set(LAYER))} a place in LAYER"
