"""The package's layers: every import (at module level or inside a function) points down or sideways, never up,
and no files import each other in a circle."""

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "multidiff"

#: lowest first; a module may import from its own layer or a lower one. A module not matched here is an error,
#: so a new file is placed deliberately.
LAYERS = [
    ("foundations", ["multidiff", "env", "paths", "distributed", "precision", "config", "runlock", "threads",
                     "posthoc_ema", "sweep", "remote"]),
    ("core", ["core"]),
    ("domains", ["domains"]),
    ("services", ["checkpoint", "sample_folder", "preemption", "sampling", "loggers"]),
    ("lightning modules", ["base_module", "module", "student", "trajectories", "autoencoder", "training",
                           "objective"]),
    ("assembly", ["build", "export", "distillation", "report"]),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    rest = module.removeprefix("multidiff.") if module != "multidiff" else "multidiff"
    for k, (_, prefixes) in enumerate(LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return k
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: place it there")


def imports_of(source: str, me: str, is_package: bool, modules: set[str]) -> set[str]:
    """The ``modules`` that module ``me`` (its ``source``) imports anywhere in its body, relative imports
    resolved."""
    package = me if is_package else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != me:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports_of(p.read_text(), m, p.name == "__init__.py", set(files)) for m, p in files.items()}


def test_graph_reader_sees_nested_and_relative_imports():
    source = "from .b import x\nfrom ..paths import y\ndef f():\n    from multidiff.core import c\n"
    modules = {"multidiff.core.b", "multidiff.core.c", "multidiff.core", "multidiff.paths"}
    found = imports_of(source, "multidiff.core.a", False, modules)
    assert found == {"multidiff.core.b", "multidiff.core.c", "multidiff.core", "multidiff.paths"}


def test_no_import_points_up():
    up = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in import_graph().items()
        for d in deps
        if layer_of(d) > layer_of(m)
    ]
    assert not up, "\n".join(up)


def test_domains_do_not_import_each_other():
    def domain(m: str) -> str | None:
        parts = m.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "domains" else None

    across = [f"{m} imports {d}" for m, deps in import_graph().items() for d in deps if domain(m) and domain(d)]
    assert not [a for a in across if domain(a.split()[0]) != domain(a.split()[-1])], across


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a loop (strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for d in graph.get(m, ()):
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def test_circle_finder_finds_a_loop():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_circles():
    assert not (found := circles(import_graph())), found
