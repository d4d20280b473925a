"""Every SQL statement is parameterised: no value is ever formatted into SQL text.

The check walks the code with ``ast``: a call to an asyncpg query method whose SQL argument is an
f-string, a ``%`` format or a ``+``/``.format`` concatenation fails, unless every interpolated name is a
module-level constant spelled in upper case (identifiers such as column lists) and the line says so
with ``# sql: constant identifiers`` (or ruff's ``# noqa: S608``). Values always travel as ``$n``
parameters or by COPY.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "index",
    "budget",
    "ingest",
    "adserver",
    "admin",
    "archive",
    "adplatform",
    "devstack",
    "loadtest",
    "bench",
)
#: The comment that justifies SQL text built from upper-case module constants (identifiers only).
MARK = "sql: constant identifiers"
#: The quoting helpers of ``adplatform.postgres`` (what passes through them is quoted, not spliced).
_QUOTERS = frozenset({"quote_ident", "quote_literal"})
QUERY_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare", "cursor"}


def _dynamic(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def _interpolated_names(node: ast.expr) -> set[str]:
    """Names that reach the SQL text, except through ``quote_ident(...)`` (a quoted identifier) or
    ``quote_literal(...)`` (a quoted literal, for the statements that take no parameters)."""
    quoted = {
        id(n)
        for call in ast.walk(node)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in _QUOTERS
        for n in ast.walk(call)
    }
    return {
        n.id
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and id(n) not in quoted and n.id not in _QUOTERS
    }


SQL_WORDS = re.compile(
    r"\b(INSERT\s+INTO|SELECT\b.*\bFROM|UPDATE\s+\S+\s+SET|DELETE\s+FROM|CREATE\s+\w+)", re.I | re.S
)


def _sql_text(node: ast.expr) -> str:
    return " ".join(
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


def _candidates(tree: ast.AST) -> list[ast.expr]:
    """SQL passed to a query method as a built string, and any built string that reads as SQL."""
    out: list[ast.expr] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in QUERY_METHODS
            and node.args
            and _dynamic(node.args[0])
        ):
            out.append(node.args[0])
        if (
            isinstance(node, (ast.JoinedStr, ast.BinOp))
            and _dynamic(node)
            and SQL_WORDS.search(_sql_text(node))
        ):
            out.append(node)
    return out


def _offences(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[str] = []
    for sql in _candidates(tree):
        names = _interpolated_names(sql)
        span = range(sql.lineno, (sql.end_lineno or sql.lineno) + 1)
        justified = any(MARK in lines[i - 1] or "noqa: S608" in lines[i - 1] for i in span)
        constants_only = all(n.isupper() or (n.startswith("_") and n[1:].isupper()) for n in names)
        if names and not (justified and constants_only):
            found.append(f"{path.relative_to(ROOT)}:{sql.lineno}: SQL built from {sorted(names) or 'text'}")
    return sorted(set(found))


def test_no_sql_statement_is_built_from_values() -> None:
    offences: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            offences += _offences(path)
    assert offences == []


def test_the_check_catches_string_built_sql(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "async def f(conn, user):\n"
        "    await conn.execute(f\"DELETE FROM t WHERE name = '{user}'\")\n"
        "    await conn.fetch('SELECT * FROM t WHERE id = %s' % user)\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(_offences(bad)) == 2
    finally:
        ROOT = saved
