"""The one typed object that holds a worker's clients and in-memory state, built in the lifespan.

``StateRef`` exists before the lifespan runs (``create_app`` makes it, routes and middleware close over
it) and holds the ``ServerState`` once started. The feedback path is optional: its own lifespan component
(see ``adserver.app.COMPONENTS``) sets it once its producer is connected, so serving starts without it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from adplatform.config import Config
from adserver.fcap import CapGate
from adserver.feedback import FeedbackCounters
from adserver.http.metrics import BIDDER_BUCKETS, Histogram, RequestMetrics
from adserver.params import RequestParser
from adserver.sync.blocked import BlockedListener
from adserver.sync.profiles import ProfileTable
from adserver.sync.publisher import ServedAdPublisher
from adserver.sync.refresher import IndexRefresher
from adserver.sync.sampler import RequestSampler
from adserver.token import TokenSigner
from index.geo import GeoTable
from index.index import TargetingIndex

if TYPE_CHECKING:
    from adserver.sync.counts import RequestCountReporter


class FeedbackHandler(Protocol):
    """The feedback path: the 200 body, or an error carrying its status (e.g. 404/422/503)."""

    @property
    def counters(self) -> FeedbackCounters:
        """Outcomes so far in this worker, for ``/metrics``."""
        ...

    async def handle(self, request_id: str, raw_body: bytes) -> bytes: ...

    def submit(self, request_id: str, raw_body: bytes) -> asyncio.Future[bytes]:
        """``handle`` as a future (raises ``FeedbackError`` for a request refused up front)."""
        ...


#: The reason of every no-fill today (``adserver_no_fill_total{reason}``, ``RequestCounts.no_fill_reasons``):
#: no campaign matched, was eligible and bid above the reserve, or every one was capped for the user.
NO_ELIGIBLE_AD: Final = "no_eligible_ad"


@dataclass
class ServeStats:
    """Outcomes of the serve route, for the fill rate (``adserver.sync.counts`` publishes them)."""

    served: int = 0
    unfilled: int = 0
    #: Refused before the auction: bad parameters (422), the index still loading (503).
    rejected: int = 0
    not_ready: int = 0
    #: Bidders in each won auction's pricing (``AuctionResult.bidders``), for ``/metrics``.
    bidders: Histogram = field(default_factory=lambda: Histogram(BIDDER_BUCKETS))

    @property
    def fill_ratio(self) -> float:
        auctions = self.served + self.unfilled
        return self.served / auctions if auctions else 0.0


@dataclass
class ServerState:
    """Everything a worker serves from. Built by ``adserver.lifespan``; never at import time."""

    config: Config
    geo: GeoTable
    parser: RequestParser
    index: TargetingIndex
    signer: TokenSigner
    rng: random.Random
    profiles: ProfileTable
    refresher: IndexRefresher
    blocked: BlockedListener
    publisher: ServedAdPublisher
    sampler: RequestSampler
    stats: ServeStats = field(default_factory=ServeStats)
    #: Frequency caps on the serve path; skips capped campaigns until ``adserver.fcap_lifespan`` connects it.
    caps: CapGate = field(default_factory=CapGate)
    #: Set by the feedback component once its producer is connected; feedback answers 503 until then.
    feedback: FeedbackHandler | None = None
    #: Set by the request-counts component while it runs (for ``/metrics``).
    counts: RequestCountReporter | None = None

    #: Once ready, ready for good (``ready``'s two conditions never revert): the serve path asks per request.
    _ready: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Here, not as the field's default: a compiled dataclass (adplatform.native) leaves init=False fields
        # unset.
        self._ready = False

    @property
    def ready(self) -> bool:
        """Ready to serve: the index is bootstrapped and the first profile load was attempted."""
        if not self._ready:
            self._ready = self.refresher.ready.is_set() and self.profiles.attempted
        return self._ready


@dataclass
class StateRef:
    """The app's handle on its state: metrics from the start, ``state`` once the lifespan has started."""

    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    state: ServerState | None = None
