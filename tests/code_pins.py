"""Finer than a file: which top-level definitions of a source file a committed result depends on.

tests/test_readme.py ties each committed result to the files its numbers depend on. A file that several results
share but use differently (bench/learned.py: the learned rows use all of it, the routing and LLM studies one table
and one helper) would otherwise send every result back to be rerun when any part of it changes. A code path
"path::A,B" pins definitions A and B of that file instead: the result stands while their code (compared as syntax
trees, so comments and blank lines do not count) and the imports they read are as they were at its commit.

A study that starts from another committed result (bench-full's chosen parameters, its rows' scores) pins that
result's rows the same way, "result.json::row A,row B": the study stands while those rows' parameters and scores are
as they were, so a rerun of the other result that reproduces them (a new commit, new timings) does not send it back.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def split_pin(entry: str) -> tuple[str, list[str]] | None:
    """("path", [names]) for "path::A,B"; None for a plain path."""
    if "::" not in entry:
        return None
    path, names = entry.split("::", 1)
    return path, names.split(",")


def changed_rows(old_text: str, new_text: str, names: list[str]) -> list[str]:
    """The named rows (data-free `methods` or `learned`, by their "method") of a benchmark result.json whose
    parameters or average scores differ between two versions, or that one version lacks."""
    def rows(text: str) -> dict[str, tuple]:
        result = json.loads(text)
        return {r["method"]: (r.get("params"), r["average"]) for r in [*result["methods"], *result.get("learned", [])]}
    old, new = rows(old_text), rows(new_text)
    return [name for name in names if name not in old or name not in new or old[name] != new[name]]


def changed(path: str, old_text: str, new_text: str, names: list[str]) -> list[str]:
    """What changed of a pin's names: rows of a result file, definitions of a source file."""
    return (changed_rows if path.endswith(".json") else changed_pins)(old_text, new_text, names)


def top_level(source: str) -> dict[str, ast.stmt]:
    """Each top-level function, class and assigned name of a module, with the statement that defines it."""
    nodes: dict[str, ast.stmt] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            nodes[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        nodes[name.id] = node
    return nodes


def import_bindings(source: str) -> dict[str, str]:
    """Each name a module's top-level imports bind, and where from."""
    bound = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{'.' * node.level}{node.module or ''}:{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name
    return bound


def referenced(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def changed_pins(old_source: str, new_source: str, names: list[str]) -> list[str]:
    """The pinned names whose definition, or an import one of them reads, differs between two versions."""
    old, new = top_level(old_source), top_level(new_source)
    old_imports, new_imports = import_bindings(old_source), import_bindings(new_source)
    changed = []
    for name in names:
        if name not in old or name not in new or ast.dump(old[name]) != ast.dump(new[name]):
            changed.append(name)
            continue
        reads = referenced(new[name]) & (set(old_imports) | set(new_imports))
        changed += [f"{name} (import of {r})" for r in sorted(reads) if old_imports.get(r) != new_imports.get(r)]
    return changed


def unpinned_dependencies(source: str, names: list[str]) -> set[str]:
    """Definitions of the same file the pinned ones read but the pin leaves out."""
    nodes = top_level(source)
    return {r for name in names for r in referenced(nodes[name]) if r in nodes} - set(names)


def module_file(module: str) -> Path | None:
    path = SRC / Path(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> dict[str, set[str]]:
    """Every taskfuse module a file imports, at any depth of its code, with the names it takes from each."""
    tree = ast.parse(path.read_text())
    parts = list(path.relative_to(SRC).with_suffix("").parts) if path.is_relative_to(SRC) else ["script"]
    package = parts[:-1]  # a module's package, or an __init__'s own; a script has none
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import x` may import module x
                if module_file(f"{module}.{alias.name}"):
                    found.setdefault(f"{module}.{alias.name}", {"*"})
                found.setdefault(module, set()).add(alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, set()).add("*")
    return {m: names for m, names in found.items() if m.startswith("taskfuse")}


def reachable(entries: list[str], stop: str | None = None) -> set[Path]:
    """The source files `entries` import at any depth (importing a.b.c runs a and a.b too), the entries included;
    the imports of `stop` are not followed."""
    target = (SRC.parent / stop).resolve() if stop else None
    seen: set[Path] = set()
    todo = [(SRC.parent / e).resolve() for e in entries]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path == target:
            continue
        for module in imported_modules(path):
            pieces = module.split(".")
            todo += [f.resolve() for depth in range(1, len(pieces) + 1)
                     if (f := module_file(".".join(pieces[:depth]))) is not None]
    return seen


def names_taken(entries: list[str], pinned: str) -> dict[str, set[str]]:
    """From the modules `entries` import at any depth (not following the pinned file's own imports), which names of
    the pinned file each one takes ("*": the module itself, so any of its names)."""
    target = (SRC.parent / pinned).resolve()
    taken: dict[str, set[str]] = {}
    for path in reachable(entries, pinned) - {target}:
        for module, names in imported_modules(path).items():
            file = module_file(module)
            if file is not None and file.resolve() == target:
                taken[str(path.relative_to(SRC.parent))] = names
    return taken
