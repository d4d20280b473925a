"""What the stack needs on the machine: system packages (apt-get on Debian/Ubuntu as root), the Kafka
broker and Spark connector jars (Maven, once, into ``.stack/jars``) and the HTTP benchmark's nginx (once,
into ``.stack/tools``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from devstack.paths import NGINX_IN_PACKAGE, Paths, StackError, say


def pg_bin() -> Path | None:
    """The folder of the newest installed PostgreSQL's initdb and pg_ctl, if any."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _is_debian_root() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def _apt_install(packages: list[str]) -> None:
    say(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env
    )


def ensure_installed() -> None:
    """Install PostgreSQL, Redis, Java and Maven when missing (Debian/Ubuntu as root), else say what to do."""
    missing: list[str] = []
    if pg_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if shutil.which("java") is None:
        missing.append("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        missing.append("maven")
    # Tools of the test suite and the benchmarks: headless Chromium renders the HTML report, wrk drives
    # the HTTP harness.
    if shutil.which("chromium") is None:
        missing += ["chromium", "fonts-dejavu-core"]
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if not missing:
        return
    if _is_debian_root():
        _apt_install(missing)
        return
    raise StackError(
        f"missing: {', '.join(missing)}. Install them with your package manager "
        "(PostgreSQL ≥ 14, Redis ≥ 6, Java ≥ 17, Maven ≥ 3.6; Chromium and wrk for tests and benchmarks), "
        "then run `adplatform stack up` again."
    )


def _pom(name: str) -> Path:
    return Path(str(resources.files("devstack").joinpath("poms", name)))


def fetch_jars(paths: Paths) -> None:
    """Resolve the Kafka broker and the Spark Kafka connector from Maven Central into ``.stack/jars`` once."""
    jobs = [
        (paths.kafka_jars, "kafka-pom.xml", "kafka_2.13-", []),
        (
            paths.spark_jars,
            "spark-pom.xml",
            "spark-sql-kafka-0-10_2.13-",
            # Only what Spark itself lacks: the connector, its token provider and clients, the JDBC driver.
            [
                "-DincludeArtifactIds=spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,"
                "kafka-clients,commons-pool2,postgresql"
            ],
        ),
    ]
    for target, pom, marker, extra in jobs:
        if target.is_dir() and any(p.name.startswith(marker) for p in target.iterdir()):
            continue
        say(f"fetching jars with Maven into {target} (once)")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(_pom(pom)), "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}", "-DincludeScope=runtime", *extra,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"maven could not fetch {pom}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # all or nothing: a killed fetch leaves no half set behind


def system_nginx() -> str | None:
    """An installed nginx (Debian puts it in /usr/sbin, not always on a user's PATH), if any."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def _apt_download(package: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", "download", "-qq", package], cwd=folder, capture_output=True, text=True)


def fetch_nginx(paths: Paths) -> None:
    """The reference server of ``make bench-http``: when no nginx is installed, Debian's nginx package is
    downloaded (``apt-get download``, as any user) and unpacked under ``.stack/tools/nginx``, once. Only
    its binary is used (``bench.nginx`` starts it with its own configuration, prefix and logs): nothing is
    installed, no service starts, port 80 stays free. Where apt is missing or the download fails the stack
    still starts, and the benchmark runs without its nginx row, saying why."""
    if system_nginx() is not None or paths.nginx.exists():
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        say("nginx not fetched (no apt-get/dpkg-deb): make bench-http runs without its nginx reference")
        return
    target = paths.nginx_tree
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    say(f"fetching Debian's nginx (binary only) into {target} (once)")
    with tempfile.TemporaryDirectory(prefix="adp-nginx-") as tmp:
        # As root, apt downloads unsandboxed into this private folder (its _apt user cannot write there; it
        # says so in a warning): nobody else can place a file here.
        download = _apt_download("nginx", Path(tmp))
        if download.returncode != 0 and _is_debian_root():  # package lists missing or stale: once more
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            download = _apt_download("nginx", Path(tmp))
        debs = sorted(Path(tmp).glob("nginx_*.deb"))
        if download.returncode != 0 or not debs:
            lines = (download.stderr + download.stdout).strip().splitlines()
            why = [line for line in lines if line.startswith("E:")] or lines or ["no package"]
            say(f"nginx not fetched ({why[-1]}): make bench-http runs without it")
            return
        unpack = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(partial)], capture_output=True, text=True
        )
        if unpack.returncode != 0 or not (partial / NGINX_IN_PACKAGE).exists():
            shutil.rmtree(partial, ignore_errors=True)
            say(f"nginx not unpacked ({unpack.stderr.strip()[-200:]}): make bench-http runs without it")
            return
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # all or nothing, as the jars
