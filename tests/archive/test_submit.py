"""The spark-submit command of ``adplatform archive submit``: built without activating the virtualenv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archive.error import ArchiveError
from archive.submit import JOB, build_submit, connector_package, submit_command


def _venv(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "spark-submit").write_text("#!/bin/sh\n")
    return bin_dir / "python"


def _stack(tmp_path: Path, *names: str) -> Path:
    jar_dir = tmp_path / "stack" / "jars" / "spark"
    jar_dir.mkdir(parents=True)
    for name in names:
        (jar_dir / name).write_bytes(b"")
    return tmp_path / "stack"


def test_the_venv_comes_first_on_path_and_runs_driver_and_executors() -> None:
    python = Path("/p/.venv/bin/python")
    cmd = build_submit(
        python=python, master="spark://h:7077", jars=[Path("/j/a.jar"), Path("/j/b.jar")], packages=[],
        job=JOB, job_args=["--until-idle"], path="/usr/bin:/bin",
    )  # fmt: skip
    assert cmd.argv == (
        "/p/.venv/bin/spark-submit", "--master", "spark://h:7077", "--jars", "/j/a.jar,/j/b.jar",
        str(JOB), "--until-idle",
    )  # fmt: skip
    env = cmd.environment({"PATH": "ignored", "ADP_TOPIC_PREFIX": "x-"})
    assert env["PATH"] == os.pathsep.join(["/p/.venv/bin", "/usr/bin:/bin"])
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == "/p/.venv/bin/python"
    assert env["ADP_TOPIC_PREFIX"] == "x-", "the job reads its config from the caller's environment"
    assert cmd.shell().startswith("env PATH=/p/.venv/bin:/usr/bin:/bin PYSPARK_PYTHON=/p/.venv/bin/python ")


def test_the_stack_jars_are_used_when_fetched(tmp_path: Path) -> None:
    stack = _stack(tmp_path, "spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar")
    cmd = submit_command(stack, python=_venv(tmp_path), path="/usr/bin")
    jars = cmd.argv[cmd.argv.index("--jars") + 1].split(",")
    assert [Path(j).name for j in jars] == ["kafka-clients-3.9.2.jar", "spark-sql-kafka-0-10_2.13-4.2.0.jar"]
    assert "--packages" not in cmd.argv and cmd.argv[-1] == str(JOB)


def test_maven_packages_when_asked_or_when_no_connector_was_fetched(tmp_path: Path) -> None:
    python = _venv(tmp_path)
    for stack, use_packages in ((_stack(tmp_path, "kafka-clients-3.9.2.jar"), False), (tmp_path, True)):
        cmd = submit_command(stack, python=python, use_packages=use_packages, path="")
        assert "--jars" not in cmd.argv
        package = cmd.argv[cmd.argv.index("--packages") + 1]
        assert package.startswith("org.apache.spark:spark-sql-kafka-0-10_2.13:4.")
    assert connector_package("4.2.0") == "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"


def test_no_spark_submit_beside_the_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"archive extra"):
        submit_command(tmp_path, python=tmp_path / "python")


def test_the_drivers_jvm_options_when_given(tmp_path: Path) -> None:
    stack, python = _stack(tmp_path, "spark-sql-kafka-0-10_2.13-4.2.0.jar"), _venv(tmp_path)
    cmd = submit_command(stack, python=python, path="", java_options="-XX:TieredStopAtLevel=1 -Xmx2g")
    assert cmd.argv[cmd.argv.index("--driver-java-options") + 1] == "-XX:TieredStopAtLevel=1 -Xmx2g"
    assert cmd.argv.index("--driver-java-options") < cmd.argv.index(str(JOB)), "spark-submit's, not the job's"
    assert "--driver-java-options" not in submit_command(stack, python=python, path="").argv
