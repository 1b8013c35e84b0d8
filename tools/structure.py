"""The shape of the code: module and function sizes, import circles, and imports that cross a package's edge.

    python tools/structure.py            # the report; exit 0
    python tools/structure.py --strict   # exit 1 when a limit is passed (CI runs it this way)
    python tools/structure.py --json     # the figures, for a commit message or a benchmark record

Limits (from the house style, issue 22): a module of at most MAX_MODULE lines; a function of at most
MAX_FUNCTION lines unless its body says why it may stay long (a ``# long:`` comment on its first lines,
e.g. one flat training loop read top to bottom); no import circle among latentds' modules, counting
imports inside functions (they hide circles, they do not remove them); no ``_private`` name imported from
another package; bench/ and tools/ use the public API only: names that ``latentds``, a package of it (its
face: ``latentds.encoding``, ``latentds.format``, ...) or a top-level module (``latentds.plan``, ...) lists in
``__all__``, never a module inside a package (``latentds.encoding.gan``); no module named utils, common or misc. Nothing is imported or run: the files are parsed with ``ast``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE = 400
MAX_FUNCTION = 80
VAGUE_NAMES = {"utils", "util", "common", "misc", "helpers"}
LONG_OK = "# long:"


@dataclass
class Report:
    modules: dict[str, int] = field(default_factory=dict)  # path -> lines
    long_modules: list[tuple[str, int]] = field(default_factory=list)
    long_functions: list[tuple[str, int]] = field(default_factory=list)  # "path:qualname" -> lines
    circles: list[list[str]] = field(default_factory=list)
    private_imports: list[str] = field(default_factory=list)
    non_public_imports: list[str] = field(default_factory=list)  # bench/tools -> not latentds' public API
    vague_modules: list[str] = field(default_factory=list)

    def problems(self) -> int:
        return (len(self.long_modules) + len(self.long_functions) + len(self.circles) + len(self.private_imports)
                + len(self.non_public_imports) + len(self.vague_modules))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``current``)."""
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(tree: ast.AST, current: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((resolve(current, is_package, node), [alias.name for alias in node.names]))
    return out


def function_sizes(tree: ast.AST, source: list[str]) -> list[tuple[str, int, bool]]:
    """(qualified name, lines, marked long-ok) of every function and method."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1
                head = "\n".join(source[child.lineno - 1: child.lineno + 6])
                out.append((prefix + child.name, lines, LONG_OK in head))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def public_names(trees: dict[str, ast.AST]) -> dict[str, set[str]]:
    """``__all__`` of each module given: a literal list, or ``sorted(D)`` of a dict literal ``D`` of the module."""
    out = {}
    for name, tree in trees.items():
        dicts = {t.id: node.value for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                 if isinstance(t, ast.Name) and isinstance(node.value, ast.Dict)}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                value = node.value
                if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Name):
                    value = dicts.get(value.args[0].id, value)  # __all__ = sorted(_HOMES)
                try:
                    out[name] = set(ast.literal_eval(value.keys if isinstance(value, ast.Dict) else value) if not
                                    isinstance(value, ast.Dict) else [ast.literal_eval(k) for k in value.keys])
                except ValueError:
                    pass
    return out


def package_of(module: str) -> str:
    """latentds.encoding.gan -> latentds.encode; latentds.plan -> latentds."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def measure() -> Report:
    report = Report()
    files = sorted(p for d in ("latentds", "bench", "tools") for p in (REPO / d).rglob("*.py"))
    trees: dict[str, ast.AST] = {}
    for path in files:
        rel = str(path.relative_to(REPO))
        source = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(source), filename=rel)
        name = module_name(path)
        trees[name] = tree
        report.modules[rel] = len(source)
        if len(source) > MAX_MODULE:
            report.long_modules.append((rel, len(source)))
        if path.stem in VAGUE_NAMES:
            report.vague_modules.append(rel)
        for qual, lines, ok in function_sizes(tree, source):
            if lines > MAX_FUNCTION and not ok:
                report.long_functions.append((f"{rel}:{qual}", lines))
    packages = {module_name(p) for p in files if p.name == "__init__.py"}
    faces = {n for n in trees if n in packages or n.count(".") == 1}  # latentds.x: a package or a top-level module
    public = public_names({n: t for n, t in trees.items() if n.startswith("latentds") and n in faces})
    graph: dict[str, set[str]] = {}
    for path in files:
        name = module_name(path)
        rel = str(path.relative_to(REPO))
        inside = name.startswith("latentds")
        for target, names in imports(trees[name], name, path.name == "__init__.py"):
            if not target.startswith("latentds"):
                continue
            if inside:
                graph.setdefault(name, set())
                if target in trees and target != name:
                    graph[name].add(target)
                for n in names:  # `from latentds.x import y` may name the module latentds.x.y
                    if f"{target}.{n}" in trees:
                        graph[name].add(f"{target}.{n}")
                if package_of(target) != package_of(name):
                    report.private_imports += [f"{rel}: {target}.{n}" for n in names
                                               if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
            else:  # bench/ and tools/: the public API only
                allowed = public.get(target)
                for n in names or [""]:
                    if allowed is None or (n and n not in allowed and f"{target}.{n}" not in packages):
                        report.non_public_imports.append(f"{rel}: {target}{'.' + n if n else ''}")
    report.circles = circles(graph)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strict", action="store_true", help="exit 1 when a limit is passed")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    r = measure()
    if args.json:
        print(json.dumps({k: v for k, v in r.__dict__.items() if k != "modules"} | {
            "modules_over_limit": len(r.long_modules), "functions_over_limit": len(r.long_functions),
            "largest_modules": sorted(r.modules.items(), key=lambda kv: -kv[1])[:8]}, indent=2))
    else:
        print(f"{len(r.modules)} modules, {sum(r.modules.values()):,} lines")
        sections = [
            (f"modules over {MAX_MODULE} lines", [f"{p} {n}" for p, n in sorted(r.long_modules, key=lambda x: -x[1])]),
            (f"functions over {MAX_FUNCTION} lines (no '{LONG_OK}' reason)",
             [f"{q} {n}" for q, n in sorted(r.long_functions, key=lambda x: -x[1])]),
            ("import circles", [" <-> ".join(c) for c in r.circles]),
            ("private names imported across packages", r.private_imports),
            ("bench/tools imports outside the public API", r.non_public_imports),
            ("vaguely named modules", r.vague_modules),
        ]
        for title, items in sections:
            print(f"{title}: {len(items)}")
            for item in items:
                print(f"  {item}")
    if args.strict and r.problems():
        print(f"structure: {r.problems()} problems over the limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
