"""Figures of the package's layout, for before/after comparisons of a refactor (issue 40's closing note).

    .venv/bin/python scripts/house_figures.py [--package src/r3exp]

Prints: modules and lines (code files only), the biggest modules, in-function imports (``import`` statements
inside a function body) with their count per module, packages ("rooms": a directory, or a top-level module) and the
import arrows between them (``a -> b``: something in ``a`` imports ``b``; in-function imports included), and
any import circle between modules (its modules). Reads the source with ``ast``; imports nothing of the package.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str, modules: set[str]) -> str:
    """The package a module lives in (``r3exp.tasks``), or the module itself at the top level."""
    parts = module.split(".")
    if len(parts) <= 2:
        return module
    return ".".join(parts[:2]) if ".".join(parts[:2]) in modules else module


def imports(tree: ast.AST, me: str, modules: set[str]) -> tuple[set[str], int]:
    """The package's modules that ``tree`` imports, and how many import statements sit inside a function."""
    targets: set[str] = set()
    in_function = 0

    def visit(node: ast.AST, inside: bool) -> None:
        nonlocal in_function
        for child in ast.iter_child_nodes(node):
            child_inside = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                in_function += inside
                if isinstance(child, ast.Import):
                    targets.update(alias.name for alias in child.names)
                else:
                    base = child.module or ""
                    if child.level:
                        base = ".".join(me.split(".")[: -child.level] + ([base] if base else []))
                    targets.add(base)
                    targets.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child, child_inside)

    visit(tree, False)
    return {target for target in targets if target in modules}, in_function


def figures(package: Path) -> str:
    files = sorted(p for p in package.rglob("*.py"))
    modules = {module_name(p, package): p for p in files}
    names = set(modules)
    lines = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    in_function: Counter = Counter()
    arrows: set[tuple[str, str]] = set()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        targets, inside = imports(ast.parse(path.read_text()), name, names)
        if inside:
            in_function[name] = inside
        for target in targets - {name}:
            edges[name].add(target)
            a, b = room(name, names), room(target, names)
            if a != b:
                arrows.add((a, b))
    rooms = {room(name, names) for name in names}
    out = [
        f"package: {package.relative_to(ROOT) if package.is_relative_to(ROOT) else package}",
        f"modules: {len(modules)}, lines: {sum(lines.values())}",
        "biggest modules: " + ", ".join(f"{n} ({c})" for n, c in sorted(lines.items(), key=lambda x: -x[1])[:5]),
        f"in-function imports: {sum(in_function.values())} statements in {len(in_function)} modules",
        f"rooms: {len(rooms)}, import arrows between rooms: {len(arrows)}",
    ]
    circles = find_circles(edges)
    out.append(
        f"import circles between modules: {len(circles)}"
        + "".join(f"\n  {', '.join(circle)} (import each other, through one another)" for circle in circles)
    )
    out.append("in-function imports per module: " + ", ".join(f"{n} {c}" for n, c in in_function.most_common()))
    return "\n".join(out)


def find_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each group of two or more modules that import one another, directly or through each other (the strongly
    connected components of the import graph, by Tarjan's algorithm), sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", default=str(ROOT / "src" / "r3exp"))
    print(figures(Path(parser.parse_args().package).resolve()))


if __name__ == "__main__":
    main()
