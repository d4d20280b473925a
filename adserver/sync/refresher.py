"""Keeps one worker's targeting index equal to ``ad-changes``: ``adplatform.index_feed`` (bootstrap from
offset 0, then tail; shared with the admin service), plus the worker's propagation histogram."""

from __future__ import annotations

import os

from adplatform.config import Config
from adplatform.index_feed import PRUNE_EVERY_S, IndexFeed
from adserver.http.metrics import PROPAGATION_BUCKETS_S, Histogram
from index.index import TargetingIndex

__all__ = ["PRUNE_EVERY_S", "IndexRefresher"]


class IndexRefresher(IndexFeed):
    """The worker's ``ad-changes`` consumer; records how long each change took to reach the index."""

    def __init__(self, config: Config, index: TargetingIndex) -> None:
        super().__init__(config, index, client_id=f"adserver-{os.getpid()}")
        self.propagation = Histogram(PROPAGATION_BUCKETS_S)

    def observe_propagation(self, seconds: float) -> None:
        self.propagation.observe(seconds)
