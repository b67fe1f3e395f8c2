"""Each layer imports only the layers below it: xraylab (shared) < train, ingest, ui, delivery < serve_app <
xraylab_cli."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BELOW = {
    "xraylab": set(),
    "train": {"xraylab"},
    "ingest": {"xraylab"},
    "ui": {"xraylab"},
    "delivery": {"xraylab"},
    "serve_app": {"xraylab", "ingest", "ui", "train", "delivery"},
    "xraylab_cli": {"xraylab", "ingest", "ui", "train", "delivery", "serve_app"},
}


def imported_layers(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(BELOW)


@pytest.mark.parametrize("layer", sorted(BELOW))
def test_layer_imports_only_layers_below(layer: str) -> None:
    wrong = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        above = imported_layers(path) - BELOW[layer] - {layer}
        if above:
            wrong[str(path.relative_to(ROOT))] = sorted(above)
    assert not wrong, f"imports from layers above {layer}: {wrong}"
