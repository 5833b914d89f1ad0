"""The import graph of dr_fdsl: module-level imports only (not those inside functions or under TYPE_CHECKING).

Prints each module's level (0: imports no dr_fdsl module; otherwise 1 + the highest level it imports) and what it
imports, then checks that the graph has no cycle and that the torch-free floor stays so: ``dr_fdsl.settings``,
``dr_fdsl.registry``, ``dr_fdsl.errors``, ``dr_fdsl.memory`` and every part's settings module
(``*_settings``, ``families/*/settings``, ``render/settings``, ``families/base``, the registries, and the
``render`` package itself, whose names are imported on first use) import neither torch nor any module above
them. Exit status 1 on a violation.

    python tools/import_graph.py            # levels and violations
    python tools/import_graph.py --edges    # also every edge
    python tools/import_graph.py --everywhere  # cycles counting imports inside functions too
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "timm", "torchvision", "pytorch3d", "accelerate", "einops", "tensorboard"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module, name: str, is_package: bool, modules: set[str],
                      everywhere: bool = False) -> set[str]:
    """Modules imported when the module runs (``everywhere``: also inside functions). ``from a import b`` counts
    ``a.b`` when that is a module, else ``a``."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]

    def visit(body):
        for node in body:
            if everywhere and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body)
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)

    visit(tree.body)
    return found


def graph(everywhere: bool = False) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "dr_fdsl").rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        imports = top_level_imports(ast.parse(path.read_text()), name, path.name == "__init__.py", set(files),
                                    everywhere)
        edges[name] = {i for i in imports if i in files and i != name} | {i.split(".")[0] for i in imports
                                                                          if i.split(".")[0] in HEAVY}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def is_floor(name: str) -> bool:
    """The torch-free modules the config loader runs."""
    leaf = name.rpartition(".")[2]
    return (name in ("dr_fdsl.settings", "dr_fdsl.registry", "dr_fdsl.errors", "dr_fdsl.memory", "dr_fdsl.config",
                     "dr_fdsl.families", "dr_fdsl.objectives", "dr_fdsl.modes", "dr_fdsl.families.base",
                     "dr_fdsl.render", "dr_fdsl.render.settings", "dr_fdsl.render.streams")
            or leaf.endswith("_settings") or (name.startswith("dr_fdsl.families.") and leaf == "settings")
            or name.count(".") == 2 and name.startswith("dr_fdsl.families.") and leaf not in ("ifs_scan",))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge")
    parser.add_argument("--everywhere", action="store_true",
                        help="count imports inside functions too (the floor is then not checked: a check may import "
                             "what it needs when its feature is configured, e.g. timm for image_aug.randaugment)")
    args = parser.parse_args()
    edges = graph(args.everywhere)
    loops = cycles(edges)
    level: dict[str, int] = {}

    def depth(v: str, seen: frozenset = frozenset()) -> int:
        if v not in edges:
            return -1  # a heavy third-party package
        if v not in level:
            level[v] = 1 + max((depth(w, seen | {v}) for w in edges[v] if w not in seen), default=-1)
        return level[v]

    for v in edges:
        depth(v)
    for v in sorted(edges, key=lambda v: (level[v], v)):
        inside = sorted(w for w in edges[v] if w in edges)
        heavy = sorted(edges[v] - set(inside))
        print(f"{level[v]:2d} {v}" + (f"  [{', '.join(heavy)}]" if heavy else ""))
        if args.edges:
            for w in inside:
                print(f"       -> {w}")
    bad = [f"{v} imports {w}" for v in sorted(edges) if is_floor(v) for w in sorted(edges[v])
           if not args.everywhere and (w in HEAVY or (w in edges and not is_floor(w)))]
    for loop in loops:
        print("cycle:", " <-> ".join(loop))
    for line in bad:
        print("the torch-free floor:", line)
    print(f"{len(edges)} modules, {sum(len(e) for e in edges.values())} imports, {len(loops)} cycles, "
          f"{len(bad)} floor violations")
    return 1 if loops or bad else 0


if __name__ == "__main__":
    sys.exit(main())
