"""``adplatform archive submit`` on the real stack: spark-submit runs the archive from a shell whose PATH
does not hold the virtualenv (as from a fresh clone, nothing activated) and archives every event."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator

import orjson
import pytest

from adplatform.config import Config
from adplatform.kafka import ensure_topics, wait_for_topics
from adplatform.wire import encoder
from archive.layout import ArchiveLayout
from archive.reader import iter_lines, read_lock, snapshot
from tests.archive.conftest import publish
from tests.archive.events import make_events
from tests.fresh import fresh_config

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

START_MS = 1_760_000_000_000


@pytest.fixture
def submit_config(base_config: Config) -> Iterator[Config]:
    config = fresh_config(base_config, kafka=True)
    yield config
    shutil.rmtree(config.archive_dir, ignore_errors=True)


async def test_archive_submit_archives_the_topic_without_an_activated_venv(
    submit_config: Config, repo_root: str
) -> None:
    config = submit_config
    await ensure_topics(config, [config.topics.feedback])
    await wait_for_topics(config, [config.topics.feedback])
    events = make_events(25, seed=7, start_ms=START_MS)
    await publish(config, [encoder.encode(e) for e in events])

    env = {
        **os.environ,
        "PATH": "/usr/bin:/bin",  # no virtualenv: spark-submit's launcher would find the system python3
        "ADP_TOPIC_PREFIX": config.topics.prefix,
        "ADP_GROUP_PREFIX": config.group_prefix,
        "ADP_ARCHIVE_DIR": str(config.archive_dir),
        "ADP_LOG_LEVEL": "WARNING",
    }
    env.pop("VIRTUAL_ENV", None)
    cmd = [sys.executable, "-m", "adplatform.cli", "archive", "submit", "--", "--until-idle"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=repo_root, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr_bytes = await asyncio.wait_for(proc.communicate(), 280)
    stderr = stderr_bytes.decode(errors="replace")
    assert proc.returncode == 0, stderr[-4000:]
    assert "spark-submit" in stderr.splitlines()[0], "the command line is echoed before it runs"

    layout = ArchiveLayout(config.archive_dir)
    with read_lock(layout):
        archived = [orjson.loads(raw)["event_id"] for raw in iter_lines(snapshot(layout).files)]
    assert sorted(archived) == sorted(e.event_id for e in events)
