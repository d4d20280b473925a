"""Packaging: the uvicorn bound admits the installed uvicorn, whose private internals we subclass, and the
server's runtime imports nothing from the optional extras."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from uvicorn.protocols.http import httptools_impl

from adserver.http.protocol import GuardedHttpToolsProtocol

ROOT = Path(__file__).resolve().parents[2]

# What adserver/http/protocol.py calls or reads on uvicorn's classes: the methods it overrides and the
# instance attributes it uses (set in uvicorn's own code, so looked up in its source, not on the class).
PROTOCOL_METHODS = (
    "connection_made", "connection_lost", "data_received", "on_message_begin", "on_headers_complete",
    "on_message_complete", "on_response_complete", "_unset_keepalive_if_required", "_start_asgi_task",
    "timeout_keep_alive_handler",
)  # fmt: skip
PROTOCOL_ATTRIBUTES = (
    "loop", "transport", "cycle", "pipeline", "flow", "server_state", "timeout_keep_alive", "headers",
    "scope",
)  # fmt: skip
CYCLE_ATTRIBUTES = (
    "scope", "transport", "response_started", "response_complete", "disconnected", "message_event",
)  # fmt: skip

# Top-level modules of the extras ([archive], [loadtest], [granian], [dev]): the server image has none.
EXTRAS_MODULES = ("pyspark", "matplotlib", "locust", "httpx", "granian", "pytest", "hypothesis")
SERVER_MODULES = (
    "adplatform.cli", "adserver.app", "adserver.http.server", "adserver.http.protocol", "ingest.manager",
    "ingest.served_writer", "ingest.producer", "budget.ledger", "budget.pacer", "budget.reconcile",
)  # fmt: skip


def _requirement(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
    assert len(found) == 1, f"one {name} requirement among the base dependencies"
    return found[0]


def _self_attributes(cls: type) -> set[str]:
    """Names assigned as ``self.NAME = ...`` anywhere in ``cls``'s own source."""
    tree = ast.parse(inspect.getsource(cls))
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


def test_uvicorn_bound_is_upper_bounded_and_admits_the_installed_version() -> None:
    requirement = _requirement("uvicorn")
    assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), (
        f"{requirement}: uvicorn's private classes are subclassed, the requirement needs an upper bound"
    )
    installed = version("uvicorn")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"installed uvicorn {installed} is outside {requirement}"
    )


def test_the_uvicorn_internals_we_subclass_exist() -> None:
    protocol = httptools_impl.HttpToolsProtocol
    assert issubclass(GuardedHttpToolsProtocol, protocol)
    missing = [m for m in PROTOCOL_METHODS if not callable(getattr(protocol, m, None))]
    assert not missing, f"uvicorn {version('uvicorn')} HttpToolsProtocol lacks {missing}"
    missing = sorted(set(PROTOCOL_ATTRIBUTES) - _self_attributes(protocol))
    assert not missing, f"uvicorn {version('uvicorn')} HttpToolsProtocol no longer sets {missing}"
    missing = sorted(set(CYCLE_ATTRIBUTES) - _self_attributes(httptools_impl.RequestResponseCycle))
    assert not missing, f"uvicorn {version('uvicorn')} RequestResponseCycle no longer sets {missing}"
    # The cycle writes responses through transport.write, which _HeadWithBody intercepts.
    assert "self.transport.write(" in inspect.getsource(httptools_impl.RequestResponseCycle)


def test_server_runtime_imports_no_extra() -> None:
    """The server image installs only the base dependencies: its processes must import without extras."""
    code = (
        "import importlib, sys\n"
        f"for name in {EXTRAS_MODULES!r}:\n"
        "    sys.modules[name] = None  # an import of it raises ImportError\n"
        f"for module in {SERVER_MODULES!r}:\n"
        "    importlib.import_module(module)\n"
        "from click.testing import CliRunner\n"
        "from adplatform.cli import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
