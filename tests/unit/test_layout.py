"""The layout stays true: `index/` is one sub-package a stage and imports run down the stages.

Imports are read with `ast` (module level, inside functions and under TYPE_CHECKING alike), so
a lazy import that runs back up a stage fails here as surely as a top-level one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# index's stages, top to bottom: a module may import its own stage and those of lower rank.
RANK = {"ingestion": 3, "answer": 3, "search": 2, "store": 1, "models": 0, "config": -1}
WEB_OR_CLI = {"fastapi", "starlette", "uvicorn", "typer", "click"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                yield node.lineno, ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.lineno, node.module


def python_files(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def stage(module: str) -> str | None:
    """The stage of a module of `index` (None: the package root, the public API)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_of_index_is_in_a_stage() -> None:
    loose = [module_name(p) for p in python_files("index")
             if module_name(p) != "index" and stage(module_name(p)) not in RANK]
    assert not loose, f"modules of index/ outside every stage folder: {loose}"
    for name in RANK:
        if name != "config":
            assert (ROOT / "index" / name / "__init__.py").is_file(), f"index/{name}/ is not a package"


def downward_violations(files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        src = module_name(path)
        src_stage = stage(src)
        if src_stage is None:
            continue  # index/__init__.py assembles the public API from every stage
        for line, target in imports(path):
            if target != "index" and not target.startswith("index."):
                continue
            dst_stage = stage(target)
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if dst_stage is None:
                bad.append(f"{where} (the package root: import the module itself)")
            elif dst_stage != src_stage and (RANK[dst_stage] >= RANK[src_stage]):
                bad.append(f"{where} ({src_stage} may not import {dst_stage})")
    return bad


def test_imports_run_down_the_stages() -> None:
    assert downward_violations(python_files("index")) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The rule above could pass by finding nothing: a store module importing search must fail."""
    fake = ROOT / "index" / "store" / "_layout_probe.py"
    fake.write_text("def f():\n    from index.search.retriever import Retriever\n    return Retriever\n")
    try:
        bad = downward_violations([fake])
    finally:
        fake.unlink()
    assert len(bad) == 1 and "store may not import search" in bad[0]


def test_no_import_cycle_inside_index() -> None:
    modules = {module_name(p): p for p in python_files("index")}
    graph = {m: {t for _, t in imports(p) if t in modules and t != m and t != "index"}
             for m, p in modules.items() if m != "index"}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(t):], t]))
            if t not in state:
                visit(t, [*trail, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_index_imports_no_web_framework_and_no_service_or_eval() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in python_files("index")
           for line, t in imports(p)
           if t.split(".")[0] in WEB_OR_CLI | {"service", "eval"}]
    assert bad == []


def test_service_and_eval_do_not_import_each_other_sideways() -> None:
    """eval never imports service; service imports eval only where the `notesrag` command is
    assembled (service/cli.py delegates `notesrag eval` to eval.cli, lazily)."""
    bad = [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in python_files("eval")
           for line, t in imports(p) if t.split(".")[0] == "service"]
    bad += [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in python_files("service")
            if p.relative_to(ROOT) != Path("service/cli.py")
            for line, t in imports(p) if t.split(".")[0] == "eval"]
    assert bad == []
