"""Archive test fixtures: one Spark session per module, a module-wide topic prefix and archive directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from typing import Any, Final

import pytest

from adplatform.config import Config
from adplatform.kafka import ensure_topics, make_producer, wait_for_topics
from archive.session import create_session
from devstack import spark_cluster
from tests.fresh import fresh_config

#: Where the modules' Spark sessions run: ``ADP_TEST_SPARK_MASTER`` if set; else under
#: ``ADP_TEST_TOPOLOGY=cluster`` on the cluster stack's standalone master (its two workers are the
#: executors, as ``archive submit --master spark://…`` runs the job: the code unchanged), else in-process.
SPARK_MASTER: Final = os.environ.get("ADP_TEST_SPARK_MASTER") or (
    spark_cluster.master_url() if os.environ.get("ADP_TEST_TOPOLOGY", "single") == "cluster" else "local[2]"
)


@pytest.fixture(scope="module")
def spark(base_config: Config) -> Iterator[Any]:
    """A small session for the module (``SPARK_MASTER``); the sink log compacts every 3 batches so that
    the ``.compact`` files Spark writes are exercised by our reader too."""
    session = create_session(
        "adplatform-archive-tests",
        base_config.stack_dir,
        master=SPARK_MASTER,
        **{"spark.sql.streaming.fileSink.log.compactInterval": "3", "spark.driver.memory": "768m"},
    )
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def module_config(base_config: Config) -> Iterator[Config]:
    """Like ``config`` but shared by a module's tests (they build on one archive); removed afterwards."""
    config = fresh_config(base_config, kafka=True)
    yield config
    shutil.rmtree(config.archive_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def feedback_topic(module_config: Config) -> Config:
    await ensure_topics(module_config, [module_config.topics.feedback])
    await wait_for_topics(module_config, [module_config.topics.feedback])
    return module_config


async def publish(config: Config, payloads: Sequence[bytes]) -> None:
    """Send raw values to the feedback topic (keyless: spread over partitions) and wait for the acks."""
    producer = make_producer(config)
    await producer.start()
    try:
        for payload in payloads:
            await producer.send(config.topics.feedback, payload)
        await producer.flush()
    finally:
        await producer.stop()
