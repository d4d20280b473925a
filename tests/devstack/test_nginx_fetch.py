"""devstack.install.fetch_nginx: with no nginx on the machine, Debian's package is downloaded and only
unpacked, into the stack's folder: the binary runs, nothing is installed, and a second call fetches
nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devstack import install
from devstack.paths import Paths

pytestmark = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None, reason="needs Debian's apt"
)


def test_unpacks_a_runnable_nginx_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = Paths(tmp_path / ".stack")
    # As on a machine without nginx (this one may have the system's): the fetch is what is tested.
    monkeypatch.setattr(install, "system_nginx", lambda: None)
    install.fetch_nginx(paths)
    assert paths.nginx.is_file()
    version = subprocess.run([str(paths.nginx), "-v"], capture_output=True, text=True, timeout=10)
    assert version.returncode == 0 and version.stderr.startswith("nginx version: nginx/")
    assert not paths.nginx_tree.with_name("nginx.partial").exists()
    # Nothing but the unpacked tree: no service, no configuration outside the stack's folder.
    assert sorted(p.name for p in (tmp_path / ".stack").iterdir()) == ["tools"]

    stamp = paths.nginx.stat().st_mtime_ns
    install.fetch_nginx(paths)  # once: an unpacked binary is kept
    assert paths.nginx.stat().st_mtime_ns == stamp
