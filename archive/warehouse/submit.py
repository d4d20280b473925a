"""The ``spark-submit`` command line of the warehouse load (``adplatform warehouse load``): the archive's
launcher (``archive.submit``) with the warehouse job, the stack's jars, and the PostgreSQL driver also on the
driver's class path, where the Hive metastore's DataNucleus looks for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from archive.error import ArchiveError
from archive.session import jdbc_jars, spark_jars
from archive.submit import DEFAULT_MASTER, SubmitCommand, build_submit

JOB = Path(__file__).resolve().parent / "job.py"


def warehouse_submit_command(
    stack_dir: Path,
    *,
    master: str = DEFAULT_MASTER,
    python: Path | None = None,
    path: str | None = None,
    job_args: tuple[str, ...] = (),
) -> SubmitCommand:
    interpreter = python or Path(sys.executable)
    if not (interpreter.parent / "spark-submit").is_file():
        raise ArchiveError(
            f"no spark-submit beside {interpreter}: install the archive extra (pip install '.[archive]')"
        )
    jars = spark_jars(stack_dir)
    driver = jdbc_jars(jars)
    if not driver:
        raise ArchiveError(
            f"no PostgreSQL JDBC driver under {stack_dir / 'jars' / 'spark'}: run `adplatform stack fetch`"
        )
    return build_submit(
        python=interpreter,
        master=master,
        jars=jars,
        packages=(),
        job=JOB,
        job_args=job_args,
        path=os.environ.get("PATH", "") if path is None else path,
        driver_class_path=driver,
    )
