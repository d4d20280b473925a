"""``index/`` is the pure core: it may import only non-I/O stdlib modules, msgspec and itself."""

from __future__ import annotations

import ast
from pathlib import Path

INDEX_DIR = Path(__file__).resolve().parents[2] / "index"
ALLOWED = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "collections",
        "dataclasses",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "math",
        "msgspec",
        "numbers",
        "operator",
        "random",
        "time",
        "typing",
        "index",
    }
)
FORBIDDEN = frozenset({"asyncio", "redis", "asyncpg", "aiokafka", "starlette", "uvicorn", "socket"})


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                found.add("index")  # relative import: inside the package
            elif node.module is not None:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.add("__import__")  # dynamic imports would dodge this test
    return found


def test_index_imports_only_pure_modules() -> None:
    files = sorted(INDEX_DIR.rglob("*.py"))
    assert len(files) >= 7
    for path in files:
        imports = _imports(path)
        assert not imports & FORBIDDEN, f"{path.name} imports {sorted(imports & FORBIDDEN)}"
        assert imports <= ALLOWED, f"{path.name} imports {sorted(imports - ALLOWED)}"


def test_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom redis.asyncio import Redis\nimport os.path\n", encoding="utf-8")
    assert _imports(bad) == {"asyncio", "redis", "os"}
