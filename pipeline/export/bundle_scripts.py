"""The bundle's `scripts/`: the pipeline code its `inference.json` runs, carried inside the bundle.

A MONAI bundle is meant to carry its own code (MONAI puts the bundle root on `sys.path` before
`run`). The overlap-tile inferer, the recorded preprocessing, the watershed and the SEG writer are
the pipeline's own modules, so instead of keeping a second copy in the source tree the export
stage copies the modules those entry points import (the closure, found by reading their imports)
into `scripts/unet_pipeline/`, with `pipeline.` renamed. One piece of code per idea, and a bundle
that runs where only torch, MONAI and MONAI's optional readers are installed. A module of the
closure that needs any other package stops the export, naming the module and the package.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from pipeline.errors import PipelineError

PACKAGE = "scripts.unet_pipeline"  # the name the bundle's configs import the copied package by
ENTRY_POINTS = ("pipeline.predict.bundle_run", "pipeline.predict.inferer", "pipeline.inference.case")

# what a MONAI-only environment holds: torch, MONAI, and the packages MONAI's optional features use
# (tifffile arrives with scikit-image, which requires it)
MONAI_ONLY_PACKAGES = frozenset(
    {"torch", "monai", "numpy", "nibabel", "SimpleITK", "pydicom", "highdicom", "scipy", "skimage", "yaml", "tqdm"}
    | {"fire", "tifffile"}
)

_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `pipeline/`
_RENAME = re.compile(r"(?<![\w.])pipeline(?=\.)")


class BundleScriptsError(PipelineError, RuntimeError):
    """The bundle's code would need a package a MONAI-only environment does not hold."""


def _path(module: str) -> Path:
    base = _SOURCE_ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _runtime_imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import that runs: `if TYPE_CHECKING:` blocks are skipped."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _pipeline_targets(module: str, names: list[str], exports: dict[str, str]) -> list[str]:
    """The pipeline modules an import pulls in: each package on the way, a submodule or a lazy name's home."""
    parts = module.split(".")
    targets = [".".join(parts[: i + 1]) for i in range(len(parts))]
    for name in names:
        sub = f"{module}.{name}"
        if _path(sub).is_file():
            targets.append(sub)
        elif name in exports:
            targets.append(exports[name])
    return targets


def closure(entry_points: tuple[str, ...] = ENTRY_POINTS) -> dict[str, set[str]]:
    """The pipeline modules the entry points import, each with the outside packages it imports.

    Raises:
        BundleScriptsError: a module of the closure imports a package outside `MONAI_ONLY_PACKAGES`
            (the standard library aside).
    """
    modules: dict[str, set[str]] = {}
    todo = [m for entry in entry_points for m in _pipeline_targets(entry, [], {})]
    while todo:
        module = todo.pop()
        if module in modules:
            continue
        tree = ast.parse(_path(module).read_text(), str(_path(module)))
        modules[module] = set()
        for imported, names in _runtime_imports(tree):
            top = imported.split(".")[0]
            if top == "pipeline":
                exports = (
                    _lazy_exports(ast.parse(_path(imported).read_text()))
                    if _path(imported).name == "__init__.py"
                    else {}
                )
                todo += _pipeline_targets(imported, names, exports)
            elif top not in sys.stdlib_module_names and top != "__future__":
                modules[module].add(top)
    for module, packages in sorted(modules.items()):
        foreign = sorted(packages - MONAI_ONLY_PACKAGES)
        if foreign:
            raise BundleScriptsError(
                f"{_path(module)}: imports {', '.join(foreign)}, which a MONAI-only environment does not hold; "
                "the exported bundle carries this module in scripts/"
            )
    return modules


def write_bundle_scripts(bundle: Path) -> list[Path]:
    """Copy the closure of `ENTRY_POINTS` into `bundle/scripts/unet_pipeline/`, `pipeline.` renamed.

    Args:
        bundle: the export folder (the MONAI bundle root).

    Returns:
        The files written, `scripts/__init__.py` first.

    Raises:
        BundleScriptsError: see `closure`.
    """
    scripts = bundle / "scripts"
    written = [scripts / "__init__.py"]
    scripts.mkdir(parents=True, exist_ok=True)
    written[0].write_text('"""Code this bundle runs: a copy of unet-pipeline\'s inference modules."""\n')
    for module in sorted(closure()):
        source = _path(module)
        target = scripts.joinpath(*PACKAGE.split(".")[1:], source.relative_to(_SOURCE_ROOT / "pipeline"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_RENAME.sub(PACKAGE, source.read_text()))
        written.append(target)
    return written
