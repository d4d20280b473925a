"""Fresh per-test (or per-module) names on the shared local stack, and the list of topics to delete."""

from __future__ import annotations

import uuid

from adplatform.config import Config

#: Every topic name a fresh config could have created on Kafka; the session deletes them when it ends.
CREATED_TOPICS: set[str] = set()


def fresh_config(base: Config, *, kafka: bool) -> Config:
    """``base`` with a fresh topic and consumer-group prefix and its own archive directory; with
    ``kafka``, its topics are deleted when the session ends."""
    tag = f"t{uuid.uuid4().hex[:10]}-"
    config = base.namespaced(tag, archive_dir=base.stack_dir / "test-archive" / tag.rstrip("-"))
    if kafka:
        CREATED_TOPICS.update(config.topics.all())
    return config
