"""Which room may import which (the folder table in the README): a newcomer finds behaviour by folder name
because each room leans only on the rooms below it. ``index/`` purity is checked in ``tests/index``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = frozenset(
    {
        "index",
        "budget",
        "ingest",
        "adserver",
        "admin",
        "archive",
        "adplatform",
        "devstack",
        "bench",
        "loadtest",
    }
)
#: room -> the project rooms it may import (itself always). bench/ and loadtest/ may import anything.
ALLOWED: dict[str, frozenset[str]] = {
    "index": frozenset(),
    "adplatform": frozenset({"index"}),
    "budget": frozenset({"index", "adplatform"}),
    "ingest": frozenset({"index", "budget", "adplatform"}),
    "adserver": frozenset({"index", "budget", "adplatform"}),
    "admin": frozenset({"index", "budget", "adplatform"}),
    "archive": frozenset({"adplatform"}),
    "devstack": frozenset({"adplatform"}),
}
#: The CLI parses arguments and dispatches to every room, lazily (inside the command functions).
DISPATCHERS = ("adplatform/cli",)


def project_imports(path: Path) -> set[str]:
    """The project rooms a module imports, at any depth of the file (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.add(node.module.split(".")[0])
    return found & ROOMS


def violations() -> list[str]:
    found = []
    for room, allowed in ALLOWED.items():
        for path in sorted((ROOT / room).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(DISPATCHERS):
                continue
            bad = project_imports(path) - allowed - {room}
            if bad:
                found.append(f"{rel} imports {sorted(bad)}")
    return found


def test_rooms_import_only_the_rooms_below_them() -> None:
    assert violations() == []


def test_the_services_never_import_each_other() -> None:
    for room in ("adserver", "ingest", "admin"):
        others = {"adserver", "ingest", "admin"} - {room}
        assert not ALLOWED[room] & others


def test_checker_sees_lazy_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f() -> None:\n    from adserver.app import app\n    import ingest.manager\n", encoding="utf-8"
    )
    assert project_imports(bad) == {"adserver", "ingest"}
