"""The house rules of ARCHITECTURE.md, read from the code itself (imports parsed with `ast`, nothing
imported): no import circle among project modules, data flows one way between the wings, suites never
import `apt`, no module over 450 lines, and a function-level import of a project module only where
ARCHITECTURE.md's table of lazy imports says which heavy dependency needs it."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("apt", "benchmarks")
MAX_LINES = 450
# Consumers at the top of the house, like tests: performance scripts may import anything.
CONSUMERS = ("benchmarks.speed",)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported project module
    line: int
    lazy: bool  # inside a function


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name refers to (longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in child.names]
            else:
                visit(child, inner)
                continue
            for target in {t for t in map(_resolve, names) if t and t != module}:
                found.append(Import(module, target, child.lineno, lazy))

    visit(ast.parse(path.read_text()), False)
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        edges[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in MODULES:
        if v not in index:
            strong(v)
    return out


def test_no_import_circle_among_project_modules():
    assert _cycles() == []


def test_no_module_over_the_size_limit():
    big = {m: n for m, p in MODULES.items() if not _in(m, CONSUMERS)
           and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"split these modules along their seams (limit {MAX_LINES} lines): {big}"


def test_suites_never_import_the_method_package():
    leaks = sorted({(i.source, i.target) for i in IMPORTS
                    if i.source.startswith("benchmarks") and not _in(i.source, CONSUMERS)
                    and i.target.startswith("apt")})
    assert leaks == []


def _layers() -> list[tuple[str, ...]]:
    """ARCHITECTURE.md's layer table: `| rank | modules |` rows, lowest first."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|", section, flags=re.M)
    assert rows, "ARCHITECTURE.md has no layer table"
    return [tuple(m.strip(" `") for m in mods.split(",")) for _, mods in sorted(rows, key=lambda r: int(r[0]))]


def _rank(module: str, layers: list[tuple[str, ...]]) -> int:
    best, rank = -1, None
    for r, prefixes in enumerate(layers):
        for p in prefixes:
            if _in(module, (p,)) and len(p) > best:
                best, rank = len(p), r
    assert rank is not None, f"{module} is in no layer of ARCHITECTURE.md: add it to the table"
    return rank


def test_every_import_points_down_the_layers():
    layers = _layers()
    up = sorted(f"{i.source} (layer {_rank(i.source, layers)}) -> {i.target} (layer {_rank(i.target, layers)})"
                for i in IMPORTS if not _in(i.source, CONSUMERS)
                and _rank(i.target, layers) > _rank(i.source, layers))
    assert up == [], "imports that point up the house:\n" + "\n".join(up)


def _allowed_lazy() -> dict[str, str]:
    """ARCHITECTURE.md's table of function-level imports: `| importing module | why |`."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Lazy imports", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`([\w.]+)`\s*\|\s*([^|]+?)\s*\|", section, flags=re.M)
    assert rows, "ARCHITECTURE.md has no table of lazy imports"
    return dict(rows)


def test_function_level_imports_only_where_architecture_md_says_why():
    allowed = _allowed_lazy()
    lazy = {i.source for i in IMPORTS if i.lazy and not _in(i.source, CONSUMERS)}
    assert sorted(lazy - set(allowed)) == [], "function-level project imports not in ARCHITECTURE.md"
    assert sorted(set(allowed) - lazy) == [], "ARCHITECTURE.md lists lazy imports the code no longer has"


def test_the_checker_sees_a_circle_and_a_lazy_import(tmp_path):
    """The rules above are only as good as the parser: a planted circle is found."""
    global MODULES, IMPORTS
    saved = MODULES, IMPORTS
    try:
        MODULES = {"apt.a": tmp_path / "a.py", "apt.b": tmp_path / "b.py"}
        (tmp_path / "a.py").write_text("from apt.b import x\n")
        (tmp_path / "b.py").write_text("def f():\n    from apt import a\n")
        IMPORTS = [imp for m, p in MODULES.items() for imp in _imports(m, p)]
        assert _cycles() == [["apt.a", "apt.b"]]
        assert [(i.source, i.target, i.lazy) for i in IMPORTS] == [("apt.a", "apt.b", False),
                                                                  ("apt.b", "apt.a", True)]
    finally:
        MODULES, IMPORTS = saved
