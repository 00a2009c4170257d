"""What each DVC stage really depends on: its code (import closure) and its params (config fields).

- Code: the stage runs as `unet-pipeline <stage>`, so it executes `pipeline/__init__.py`,
  `pipeline/cli.py` (its module-level imports; its other sub-commands import inside functions that
  a stage never calls) and the transitive closure of the imports of
  `pipeline/stages/<stage>.py` inside `pipeline/` (function-level imports included; a name taken
  from a package's lazy `_EXPORTS` table counts as an import of the module it names).
- Params: every maximal attribute chain on a variable named `cfg` in those files, resolved
  against the `Config` schema (`cfg.train.augment.flip_axes` -> `train.augment.flip_axes`;
  `cfg.depth`, a property, -> what the property reads; methods such as `cfg.flat()` end a chain).

Run `python tools/stage_deps.py` to print the deps/params lists `dvc.yaml` should hold, or
`python tools/stage_deps.py --write` to put them into `dvc.yaml` (comments, data deps and outputs kept).
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"
STAGES = ("preprocess", "train", "evaluate", "export")
CLI_FILES = ("pipeline/__init__.py", "pipeline/cli.py")


def module_file(module: str) -> str | None:
    """`pipeline.io.atomic` -> `pipeline/io/atomic.py` (or the package's `__init__.py`), repo-relative."""
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(REPO).as_posix()
    return None


def _module_name(rel: str) -> str:
    parts = Path(rel).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _lazy_exports(package_file: str) -> dict[str, str]:
    """A package `__init__`'s `_EXPORTS = {"name": "module", ...}` table, if it has one."""
    tree = ast.parse((REPO / package_file).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return {k: v for k, v in ast.literal_eval(node.value).items()}
    return {}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def imported_files(rel: str, top_level_only: bool = False) -> frozenset[str]:
    """Files inside the package that `rel` imports directly (parent packages' `__init__` included);
    `top_level_only` skips imports inside functions (the CLI's other sub-commands)."""
    here = _module_name(rel)
    is_pkg = rel.endswith("__init__.py")
    modules: set[str] = set()
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".") if is_pkg else here.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            modules.add(target)
            pkg_file = module_file(target)
            for alias in node.names:
                if module_file(f"{target}.{alias.name}"):
                    modules.add(f"{target}.{alias.name}")
                elif pkg_file and pkg_file.endswith("__init__.py") and alias.name in _lazy_exports(pkg_file):
                    modules.add(_lazy_exports(pkg_file)[alias.name])
    files = set()
    for module in modules:
        if module.split(".")[0] != PACKAGE:
            continue
        for m in _with_parents(module):
            f = module_file(m)
            if f:
                files.add(f)
    return frozenset(files)


def code_closure(stage: str) -> set[str]:
    """Every package file the stage's command executes or may import."""
    todo = [*CLI_FILES, f"pipeline/stages/{stage}.py"]
    seen: set[str] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(imported_files(f, top_level_only=f == "pipeline/cli.py") - seen)
    return seen


# ------------------------------------------------------------------------------------- params


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """`cfg.train.augment.flip_axes` -> ("cfg", ["train", "augment", "flip_axes"])."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, attrs[::-1]
    return None


def _maximal_chains(tree: ast.AST, root: str) -> list[list[str]]:
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and id(n) not in inner:
            c = _chain(n)
            if c and c[0] == root:
                out.append(c[1])
    return out


def _resolve(attrs: list[str]) -> list[str]:
    """Attribute chain on a Config -> the dotted config paths it reads (none for a method)."""
    from pydantic import BaseModel

    from pipeline.config import Config

    model: type[BaseModel] | None = Config
    path: list[str] = []
    for name in attrs:
        if model is None:
            break
        if name in model.model_fields:
            path.append(name)
            ann = model.model_fields[name].annotation
            model = ann if inspect.isclass(ann) and issubclass(ann, BaseModel) else None
            continue
        prop = inspect.getattr_static(model, name, None)
        if isinstance(prop, property) and not path:  # a property of Config: what it reads
            tree = ast.parse(textwrap.dedent(inspect.getsource(prop.fget)))
            return [p for chain in _maximal_chains(tree, "self") for p in _resolve(chain)]
        break
    return [".".join(path)] if path else []


def params_read(stage: str) -> set[str]:
    """Dotted config paths the stage's code reads (maximal chains on `cfg`)."""
    out: set[str] = set()
    for f in code_closure(stage):
        for chain in _maximal_chains(ast.parse((REPO / f).read_text(encoding="utf-8")), "cfg"):
            out.update(_resolve(chain))
    return out


# ---------------------------------------------------------------------------- dvc.yaml lists


def covers(entry: str, path: str) -> bool:
    """A dvc.yaml dep (file or folder) or param (section or dotted key) covers `path`."""
    sep = "/" if "/" in entry or "/" in path else "."
    return path == entry or path.startswith(entry.rstrip(sep) + sep)


def suggested_code_deps(files: set[str]) -> list[str]:
    """The closure written compactly: a package folder where every .py file of it is used."""
    out: set[str] = set()
    for f in files:
        folder = Path(f).parent
        whole = {p.relative_to(REPO).as_posix() for p in (REPO / folder).glob("*.py")}
        out.add(folder.as_posix() if folder.as_posix() != PACKAGE and whole <= files else f)
    return sorted(out)


def suggested_params(params: set[str]) -> list[str]:
    """Top-level scalars and the sections read; a section read only in part is listed by key."""
    from pipeline.config import Config

    out = set()
    for p in params:
        section = p.split(".")[0]
        wanted = {k for k in params if k.split(".")[0] == section}
        fields = Config.model_fields[section].annotation
        n_fields = len(getattr(fields, "model_fields", {})) or 1
        out.add(section if section in wanted or len(wanted) >= n_fields else p)
    return sorted(out)


def rewrite_dvc_yaml(text: str) -> str:
    """dvc.yaml with each stage's code deps and params replaced by what the code says (comments,
    data deps and outputs kept; code deps go at the end of each deps list). A `foreach` stage's
    sections sit one level deeper, under `do:`."""
    out: list[str] = []
    stage = section = None
    depth = 4  # indentation of a stage's sections (cmd, deps, params, outs)
    for line in text.splitlines():
        key, indent = line.strip().rstrip(":"), len(line) - len(line.lstrip())
        if indent == 2 and line.rstrip().endswith(":") and not key.startswith("#"):
            stage, section, depth = (key if key in STAGES else None), None, 4
        elif stage and indent == 4 and key == "do":
            depth = 6
        elif stage and indent == depth and line.strip() and not key.startswith(("#", "-")):
            if section == "deps":
                out += [f"{' ' * (depth + 2)}- {d}" for d in suggested_code_deps(code_closure(stage))]
            section = key.split(":")[0]
            out.append(line)
            if section == "params":
                out += [f"{' ' * (depth + 2)}- {p}" for p in suggested_params(params_read(stage))]
            continue
        entry = f"{' ' * (depth + 2)}- "
        if stage and (
            (section == "deps" and line.startswith(f"{entry}{PACKAGE}/"))
            or (section == "params" and line.startswith(entry))
        ):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if sys.argv[1:] == ["--write"]:
        path = REPO / "dvc.yaml"
        path.write_text(rewrite_dvc_yaml(path.read_text(encoding="utf-8")), encoding="utf-8")
        sys.exit(0)
    for stage in STAGES:
        print(f"{stage}:\n  deps:")
        for d in suggested_code_deps(code_closure(stage)):
            print(f"    - {d}")
        print("  params:")
        for p in suggested_params(params_read(stage)):
            print(f"    - {p}")
