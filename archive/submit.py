"""The ``spark-submit`` command line of the streaming archive, set up so it runs from a fresh clone without
an activated virtualenv (``adplatform archive submit``).

pyspark's ``spark-submit`` launcher finds Spark by running the ``python3`` it finds on ``PATH``: outside an
activated virtualenv that is the system Python, which has no pyspark, and the launcher fails with
``/bin/spark-class: No such file or directory``. The command built here puts the virtualenv's ``bin`` first
on ``PATH`` and names its Python for the driver and the executors (``PYSPARK_PYTHON``,
``PYSPARK_DRIVER_PYTHON``); the Kafka connector comes from the jars ``adplatform stack fetch`` already put
under ``.stack/jars/spark`` (offline, ``--jars``) or, when asked or when they are missing, from Maven
(``--packages``). Building is pure; ``run_submit`` executes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from archive.error import ArchiveError

JOB = Path(__file__).resolve().parent / "feedback_writer.py"
DEFAULT_MASTER = "local[2]"
CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"


@dataclass(frozen=True)
class SubmitCommand:
    """A spark-submit invocation: its argv and the environment variables it sets on top of the caller's."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    def shell(self) -> str:
        """One line a user can paste into a shell (``env VAR=… spark-submit …``)."""
        assignments = [f"{name}={value}" for name, value in self.env]
        return shlex.join(["env", *assignments, *self.argv])

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return {**base, **dict(self.env)}


def connector_package(pyspark_version: str) -> str:
    """The Maven coordinates of the Kafka connector matching pyspark (Scala 2.13, as pyspark 4 ships)."""
    return f"{CONNECTOR}:{pyspark_version}"


def build_submit(
    *,
    python: Path,
    master: str,
    jars: Sequence[Path],
    packages: Sequence[str],
    job: Path,
    job_args: Sequence[str],
    path: str,
    driver_class_path: Sequence[Path] = (),
    driver_java_options: str = "",
) -> SubmitCommand:
    """The command for ``job`` under the virtualenv whose interpreter is ``python``; ``path`` is the
    caller's ``PATH``, kept after the virtualenv's ``bin``."""
    bin_dir = python.parent
    argv = [str(bin_dir / "spark-submit"), "--master", master]
    if jars:
        argv += ["--jars", ",".join(str(j) for j in jars)]
    if packages:
        argv += ["--packages", ",".join(packages)]
    if driver_class_path:
        argv += ["--driver-class-path", os.pathsep.join(str(j) for j in driver_class_path)]
    if driver_java_options:
        argv += ["--driver-java-options", driver_java_options]
    argv += [str(job), *job_args]
    env = (
        ("PATH", os.pathsep.join(p for p in (str(bin_dir), path) if p)),
        ("PYSPARK_PYTHON", str(python)),
        ("PYSPARK_DRIVER_PYTHON", str(python)),
    )
    return SubmitCommand(tuple(argv), env)


def submit_command(
    stack_dir: Path,
    *,
    master: str = DEFAULT_MASTER,
    job_args: Sequence[str] = (),
    use_packages: bool = False,
    python: Path | None = None,
    path: str | None = None,
    java_options: str = "",
) -> SubmitCommand:
    """The archive's spark-submit command for this installation: the running interpreter's virtualenv,
    the stack's pre-fetched jars (or Maven packages when ``use_packages`` or when no jars were fetched), the
    driver's JVM run with ``java_options`` (``Config.archive_java_options``)."""
    interpreter = python or Path(sys.executable)
    if not (interpreter.parent / "spark-submit").is_file():
        raise ArchiveError(
            f"no spark-submit beside {interpreter}: install the archive extra (pip install '.[archive]')"
        )
    jar_dir = stack_dir / "jars" / "spark"
    jars = sorted(jar_dir.glob("*.jar"))
    has_connector = any(j.name.startswith("spark-sql-kafka-0-10") for j in jars)
    packages: list[str] = []
    if use_packages or not has_connector:
        try:
            packages = [connector_package(version("pyspark"))]
        except PackageNotFoundError:
            raise ArchiveError("pyspark is not installed: pip install '.[archive]'") from None
        jars = []  # the fetched Kafka jars would clash with what --packages resolves
    return build_submit(
        python=interpreter,
        master=master,
        jars=jars,
        packages=packages,
        job=JOB,
        job_args=job_args,
        path=os.environ.get("PATH", "") if path is None else path,
        driver_java_options=java_options,
    )


def run_submit(command: SubmitCommand) -> int:
    """Run ``command`` in the foreground with the caller's environment plus its own; its exit status."""
    return subprocess.call(list(command.argv), env=command.environment(os.environ))
