"""The house rules of `pipeline/`, read off the source: imports flow one way, files stay small.

Every import counts, function-level ones included; a name imported from a package's lazy
`__init__` (`_EXPORTS`) counts as an import of the module that defines it. The layer order is the
one `docs/ARCHITECTURE.md` draws between its `layers` markers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 60
FILE_LIMIT_EXEMPT = {"pipeline/config.py"}  # the config schema stays one file (issue 25)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazy_exports(tree: ast.Module) -> dict[str, str]:
    """A lazy package's `_EXPORTS = {"name": "module", ...}`."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return {k.value: v.value for k, v in zip(node.value.keys, node.value.values)}  # type: ignore[union-attr]
    return {}


def parse_package() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """module -> the pipeline modules it imports (anywhere in its body)."""
    exports = {name: lazy_exports(tree) for name, tree in trees.items()}
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "pipeline"]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
                targets = []
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in trees:
                        targets.append(sub)
                    else:
                        targets.append(exports.get(node.module, {}).get(alias.name, node.module))
            else:
                continue
            graph[name].update(t for t in targets if t in trees and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layers() -> dict[str, int]:
    """Top-level package (or module) of `pipeline` -> its layer, from ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert block, "docs/ARCHITECTURE.md lost its <!-- layers --> block"
    out: dict[str, int] = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\d+)\.\s+(.*)", line)
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                out[name] = int(m.group(1))
    return out


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pipeline"


def test_there_are_no_import_cycles() -> None:
    cycle = find_cycle(import_graph(parse_package()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_through_function_level_imports() -> None:
    """The check above can fail: a function-level import back makes a circle."""
    trees = {
        "pipeline.a": ast.parse("from pipeline.b import f\n"),
        "pipeline.b": ast.parse("def f():\n    from pipeline.a import g\n"),
    }
    assert find_cycle(import_graph(trees)) == ["pipeline.a", "pipeline.b", "pipeline.a"]


def test_every_import_goes_to_the_same_package_or_a_lower_layer() -> None:
    order = layers()
    trees = parse_package()
    unplaced = sorted({top(m) for m in trees} - set(order))
    assert not unplaced, f"packages missing from ARCHITECTURE.md's layers: {unplaced}"
    upward = [
        f"{src} -> {dst} (layer {order[top(src)]} -> {order[top(dst)]})"
        for src, targets in import_graph(trees).items()
        for dst in sorted(targets)
        if top(src) != top(dst) and order[top(dst)] >= order[top(src)]
    ]
    assert not upward, "imports that do not go down:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_functions_stay_small(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    source = path.read_text()
    if rel not in FILE_LIMIT_EXEMPT:
        assert source.count("\n") <= MAX_FILE_LINES, f"{rel}: {source.count(chr(10))} lines > {MAX_FILE_LINES}"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{rel}: functions over {MAX_FUNCTION_LINES} lines: {long}"
