"""The code's shape, checked: module and function sizes, no import cycle, imports flowing one way
(params -> templates/training -> jobs -> services -> sdk -> cli; serve/ on top), settings read
in one place. Static (``ast`` over the source), so it runs in a fraction of a second."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deeptrain", "serve")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "migrations" not in p.parts}


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), filename=str(modules()[name]))


def _known(name: str) -> str | None:
    """The deeptrain/serve module an imported name lives in (``a.b.c`` -> ``a.b`` when ``c`` is a name)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _typing_only(name: str) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    return {id(n) for node in ast.walk(tree(name)) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}


def imports_of(name: str, runtime_only: bool = False) -> set[str]:
    """Every deeptrain/serve module ``name`` imports, at module level or inside a function
    (``runtime_only``: not counting the imports for type annotations only)."""
    found: set[str] = set()
    package = name if modules()[name].name == "__init__.py" else name.rpartition(".")[0]
    skip = _typing_only(name) if runtime_only else set()
    for node in ast.walk(tree(name)):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}".rstrip(".")
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        found.update(t for t in map(_known, targets) if t and t != name)
    return found


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph = {m: sorted(imports_of(m)) for m in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(graph[node]):
                work.append((node, i + 1))
                nxt = graph[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_80_lines():
    long = {f"{name}.{node.name}": node.end_lineno - node.lineno + 1
            for name in modules() for node in ast.walk(tree(name))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_import_cycle():
    assert _cycles() == []


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("deeptrain", "serve"),  # serve/ depends on deeptrain/, never the reverse
    ("deeptrain.cli", "deeptrain.jobs"),  # the CLI is a thin layer over the SDK
    ("deeptrain.cli", "deeptrain.services"),
    ("deeptrain.params", "deeptrain.templates"),  # the schema is the bottom layer (a type-only import aside)
    ("deeptrain.params", "deeptrain.jobs"),
    ("deeptrain.training", "deeptrain.jobs"),  # the loop runs without Ray
    ("deeptrain.training", "deeptrain.services"),
    ("deeptrain.services", "deeptrain.jobs"),
    ("deeptrain.services", "deeptrain.sdk"),
    ("deeptrain.jobs", "deeptrain.sdk"),
    ("deeptrain.jobs", "deeptrain.cli"),
    ("deeptrain.remote", "deeptrain.services"),  # remote mode has no store, storage or cluster of its own
    ("deeptrain.remote", "deeptrain.jobs"),
    ("deeptrain.remote", "deeptrain.sdk"),  # the SDK hands out a remote client, not the reverse
])
def test_imports_flow_one_way(importer: str, forbidden: str):
    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    bad = sorted(f"{m} -> {t}" for m in modules() if inside(m, importer)
                 for t in imports_of(m, runtime_only=True) if inside(t, forbidden))
    assert not bad, bad


def _reads_deeptrain_variable(node: ast.AST) -> bool:
    """``os.environ.get("DEEPTRAIN_…")``, ``os.getenv("DEEPTRAIN_…")`` or ``os.environ["DEEPTRAIN_…"]`` (a read)."""
    def named(arg: ast.AST | None) -> bool:
        return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("DEEPTRAIN_")

    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        target = ast.unparse(node.func)
        return target in ("os.environ.get", "environ.get", "os.getenv", "getenv") and named(node.args[0])
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return ast.unparse(node.value) in ("os.environ", "environ") and named(node.slice)
    return False


def test_settings_are_read_only_by_settings():
    """No ``DEEPTRAIN_*`` variable is read from the environment outside ``deeptrain/config.py``."""
    reads = [f"{name}:{node.lineno}: {ast.unparse(node)}" for name in modules() if name != "deeptrain.config"
             for node in ast.walk(tree(name)) if _reads_deeptrain_variable(node)]
    assert not reads, reads


def test_readme_lists_every_setting():
    from deeptrain.config import Settings

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    missing = [Settings.variable(name) for name in Settings.model_fields
               if f"| `{Settings.variable(name)}` |" not in table]
    assert not missing, f"README's configuration table lacks {missing}"
