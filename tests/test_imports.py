"""The package's import graph: no cycle, and every import points down the floors that README.md's
layout section writes down ("floor N  label  modules..."). Imports inside functions count too: a
lazy import is still a dependency, it only moves the time it is paid."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nmt"
SUBPACKAGES = ("cli", "layers", "serving", "tasks")  # each sits on one floor as a whole


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The nmt modules that ``name`` imports, anywhere in the file."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            # `from nmt import decoding` imports the module nmt.decoding; `from nmt.x import f`, nmt.x
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def read_floors(readme: str) -> dict[str, int]:
    """``{"nmt.constants": 1, ..., "nmt.cli": 9, "nmt": 9}`` from the README's ``floor N`` lines (a floor
    may take more than one line)."""
    floors = {}
    for line in readme.splitlines():
        match = re.match(r"floor (\d+) +(.+?)  +(\S.*)$", line)
        if match:
            for module in match.group(3).split():
                floors["nmt" if module == "nmt" else f"nmt.{module}"] = int(match.group(1))
    return floors


def floor_unit(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1] in SUBPACKAGES else name


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


FLOORS = read_floors((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_writes_down_nine_floors_and_every_module_has_one() -> None:
    assert sorted(set(FLOORS.values())) == list(range(1, 10))
    units = {floor_unit(name) for name in module_names()}
    assert sorted(units - set(FLOORS)) == [], "modules on no floor: add them to README.md's floor lines"
    assert sorted(set(FLOORS) - units) == [], "floor lines name modules that do not exist"


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_points_down() -> None:
    upward = []
    for name, targets in graph().items():
        here = FLOORS[floor_unit(name)]
        for target in targets:
            if floor_unit(target) != floor_unit(name) and FLOORS[floor_unit(target)] > here:
                upward.append(f"{name} (floor {here}) imports {target} (floor {FLOORS[floor_unit(target)]})")
    assert upward == []


def test_the_checks_detect_what_they_are_for() -> None:
    """The helpers on made-up graphs: a cycle is found, a clean graph passes, a floor line parses."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert read_floors("floor 3  decoding  pipeline layers\nfloor 9  top  cli nmt") == {
        "nmt.pipeline": 3, "nmt.layers": 3, "nmt.cli": 9, "nmt": 9}
    assert floor_unit("nmt.serving.calls") == "nmt.serving" and floor_unit("nmt.decoding") == "nmt.decoding"


@pytest.mark.parametrize("floor", [1, 2])
def test_the_lowest_floors_import_without_tensorflow(floor: int) -> None:
    """What the CLI checks before TensorFlow loads (configs, corpora, run directories) must not load it."""
    modules = sorted(name for name, level in FLOORS.items() if level == floor)
    code = (f"import sys\nimport {', '.join(modules)}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout
