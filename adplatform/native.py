"""The serving hot path compiled to C by mypyc, and the guard that never lets a stale build run.

``make native`` (a step of ``make setup``, so of ``make demo`` and ``make test``) compiles ``MODULES`` in
place: each gets a ``.so`` beside its ``.py``, which Python imports instead of the source, and the
modules of the group call each other natively. The source is the same; mypyc turns its annotations (mypy
strict) into C types and checks them at run time. Measured on the serve bench: 1.08-1.20x the requests/s at
0.80-0.90x the server's CPU per request, p99 no longer; the request parser and the token another ~1.05x
(BENCHMARKS.md, issue 18). A compiled class cannot be patched or subclassed by interpreted code (tests patch
what they must around it).

msgspec Structs stay in modules that are not compiled (``index.results``, ``adplatform.parsed``,
``adserver.request_token``...): mypyc drops their class options (``frozen``, ``array_like``...).

Stale is never silent. The build records a digest of every source of ``SOURCE_PACKAGES`` (compiled code
inlines the constants of the modules it imports, so its own file is not enough). ``ensure_current``
runs when ``adplatform`` is imported, before any compiled module is (every service, CLI command, test
run, bench and load test imports it first): a build whose digest no longer matches the sources is
removed, with one line on stderr, and the process runs the sources as they are, in pure Python, until
``make native`` builds them again. Without a C compiler the build says so and everything runs in pure
Python, only slower. ``adplatform native status`` says which it is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Final

#: The repository root (the parent of the ``adplatform`` package).
ROOT: Final = Path(__file__).resolve().parents[1]
#: Compiled modules, relative to ``ROOT``: what a served ad runs through, and nothing that defines a
#: msgspec Struct.
MODULES: Final = (
    "adplatform/params.py",
    "index/auction.py",
    "index/delivery.py",
    "index/geo.py",
    "index/index.py",
    "index/money.py",
    "index/pacing.py",
    "index/throttle.py",
    "adserver/fcap.py",
    "adserver/http/direct.py",
    "adserver/http/metrics.py",
    "adserver/http/protocol.py",
    "adserver/serve.py",
    "adserver/state.py",
    "adserver/token.py",
)
#: Packages whose sources the build's digest covers.
SOURCE_PACKAGES: Final = ("adplatform", "adserver", "budget", "index")
#: The group's shared library, ``adplatform/native_group__mypyc<EXT_SUFFIX>`` (mypyc then reports every
#: compiled module's ``__file__`` under ``adplatform/``; ``loaded`` reads only its suffix).
GROUP: Final = "adplatform.native_group"
#: The build's record, relative to the root: the digest it was built from.
MANIFEST: Final = Path("build/native.json")
#: The compiler's output of the last build, relative to the root.
LOG: Final = Path("build/native.log")
EXT_SUFFIX: Final = str(sysconfig.get_config_var("EXT_SUFFIX"))


def module_names() -> list[str]:
    """The compiled modules' import names."""
    return [rel.removesuffix(".py").replace("/", ".") for rel in MODULES]


def libraries(root: Path = ROOT) -> list[Path]:
    """The build's shared libraries that exist now: one per module and the group's."""
    stems = [rel.removesuffix(".py") for rel in MODULES] + [f"{GROUP.replace('.', '/')}__mypyc"]
    return [path for path in (root / f"{stem}{EXT_SUFFIX}" for stem in stems) if path.exists()]


def digest(root: Path = ROOT) -> str:
    """SHA-256 of the compiled modules' list, the interpreter's ABI and every source of
    ``SOURCE_PACKAGES`` (path and content)."""
    h = hashlib.sha256()
    h.update(repr((MODULES, GROUP, EXT_SUFFIX)).encode())
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _recorded(root: Path) -> str | None:
    try:
        recorded = json.loads((root / MANIFEST).read_text())["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded if isinstance(recorded, str) else None


def state(root: Path = ROOT) -> str:
    """``compiled`` (every library there and current), ``stale`` (some there, not all or not current), or
    ``pure`` (none)."""
    found = libraries(root)
    if not found:
        return "pure"
    if len(found) == len(MODULES) + 1 and _recorded(root) == digest(root):
        return "compiled"
    return "stale"


def loaded() -> list[str]:
    """Compiled modules this process has imported (from their shared libraries)."""
    return [
        n for n in module_names() if str(getattr(sys.modules.get(n), "__file__", "")).endswith(EXT_SUFFIX)
    ]


def remove(root: Path = ROOT) -> int:
    """Remove the build's libraries and record; returns how many libraries there were."""
    found = libraries(root)
    for path in found:
        path.unlink(missing_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    return len(found)


def ensure_current(root: Path = ROOT) -> str | None:
    """Remove a stale build before anything imports it; returns what was done (None: nothing to do).

    Raises ``RuntimeError`` when stale compiled modules were already imported (they cannot be unloaded),
    and ``ImportError`` (after removing the build) when one is being imported: its library is loaded, and
    its import brought this check in, too late to run its source instead."""
    if state(root) != "stale":
        return None
    stale = loaded() if root == ROOT else []
    if stale:
        raise RuntimeError(
            f"compiled modules older than their sources already imported ({', '.join(stale)}): "
            "run `make native`"
        )
    loading = _mapped(root) if root == ROOT else []
    count = remove(root)
    if loading:
        # A compiled module of a package that does not import adplatform first (``index``, the bottom
        # room) is being imported: its library is loaded already and cannot run its source instead.
        raise ImportError(
            f"native: {loading[0].relative_to(root)} was built from other sources and loaded before "
            f"adplatform could check it; removed {count} compiled libraries: import it again to run its "
            "source, or run `make native`"
        )
    return (
        f"native: removed {count} compiled libraries built from other sources; "
        "running pure Python until `make native`"
    )


def _mapped(root: Path) -> list[Path]:
    """The build's libraries this process has loaded, imported or being imported (Linux's
    ``/proc/self/maps``; none where there is no such file)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return [path for path in libraries(root) if str(path) in maps]


def build(root: Path = ROOT) -> int:
    """Compile ``MODULES`` in place (nothing to do when current); returns an exit status."""
    if state(root) == "compiled":
        print(f"native: up to date ({len(MODULES)} compiled modules)")
        return 0
    remove(root)
    if shutil.which(str(sysconfig.get_config_var("CC") or "cc").split()[0]) is None:
        print("native: no C compiler found: running pure Python (install gcc, then `make native`)")
        return 0
    log = root / LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        f"setup(name='adplatform-native', ext_modules=mypycify({list(MODULES)!r}, group_name={GROUP!r},"
        " target_dir='build/native-c'), script_args=['-q', 'build_ext', '--inplace', '--parallel', '2',"
        " '--build-temp', 'build/native-o'])\n"
    )
    with log.open("wb") as out:
        done = subprocess.run([sys.executable, "-c", code], cwd=root, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0 or len(libraries(root)) != len(MODULES) + 1:
        remove(root)
        print(f"native: mypyc build failed (exit {done.returncode}); see {log}", file=sys.stderr)
        return 1
    (root / MANIFEST).write_text(json.dumps({"digest": digest(root), "modules": list(MODULES)}) + "\n")
    print(f"native: compiled {len(MODULES)} modules with mypyc")
    return 0
