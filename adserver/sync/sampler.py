"""Request sampling: a share of serve requests, with their loss reasons, published to ``ad-requests-sample``.

The serve route asks ``pick()`` (one random draw) only after it has answered; for a picked request it calls
``record``, which walks the request's matching campaigns once (``index.explain.auction_losses``) and queues
the sample. Unsampled requests pay the draw and nothing else. ``BatchShipper`` ships queued samples as it
ships served ads (linger, one record each, librdkafka's batches, deliveries counted).

Degradation policy: best effort. Kafka slow or down fills the bounded queue, after which samples are
dropped and counted (``dropped``); a diagnosis then sees fewer samples, serving is never slowed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from adplatform.config import Config
from adplatform.params import ANONYMOUS_USER_ID
from adplatform.sample import RequestSample, sample_encoder, user_digest
from adserver.sync.shipper import BatchShipper
from index.explain import LossReason, auction_losses
from index.index import TargetingIndex
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.results import AuctionResult
from index.targeting import AdRequest


class RequestSampler(BatchShipper[RequestSample]):
    """Decides which requests are sampled, builds their samples, and ships them in the background."""

    def __init__(
        self,
        config: Config,
        *,
        rng: random.Random | None = None,
        max_queue: int = 10_000,
        linger_s: float = 0.2,
    ) -> None:
        super().__init__(
            config,
            topic=config.topics.requests_sample,
            client_id="adserver-sample",
            max_queue=max_queue,
            linger_s=linger_s,
        )
        self.rate = config.request_sample_rate
        self._key = config.token_keys[0].secret
        self._random = (rng or random.Random()).random
        self.sampled = 0

    def pick(self) -> bool:
        """Whether to sample this request: one draw (no draw at all when sampling is off)."""
        return self.rate > 0.0 and self._random() < self.rate

    def record(
        self,
        index: TargetingIndex,
        request: AdRequest,
        now_s: float,
        result: AuctionResult | None,
        sat_out: Mapping[str, LossReason] | None = None,
    ) -> None:
        """Build the sample of a decided auction (after its response) and queue it; never blocks.
        ``sat_out``: the campaigns the serve path passed over (capped, throttled) and why."""
        self.sampled += 1
        if not self._has_room():
            return
        reserve = self._config.reserve_cpm_units
        served = None if result is None else result.campaign
        losses = auction_losses(
            index, request, now_s, served=served, reserve_cpm_units=reserve, sat_out=sat_out
        )
        self.offer(
            RequestSample(
                at_ms=int(now_s * 1000),
                user=user_digest(request.user_id, self._key, anonymous_id=ANONYMOUS_USER_ID),
                device_type=request.device_type,
                city=request.city,
                state=request.state,
                country=request.country,
                age=request.age,
                gender=request.gender,
                income_bucket=request.income_bucket,
                outcome="no_fill" if result is None else "served",
                winner=None if served is None else served.campaign_id,
                tie=any(loss.reason == "tie" for loss in losses.losses),
                runner_up=losses.runner_up,
                auction_cpm=None if result is None else cpm_units_to_decimal(result.clearing_cpm_units),
                auction_cpc=None if result is None else micros_to_decimal(result.auction_cpc_micros),
                auction_cpa=None if result is None else micros_to_decimal(result.auction_cpa_micros),
                clearing_cpm_units=None if result is None else result.clearing_cpm_units,
                reserve_cpm_units=reserve,
                losses=losses.losses,
                floor_cpm_units=losses.floor_cpm_units,
            )
        )

    async def run(self) -> None:
        if self.rate <= 0.0:
            return  # sampling off: no producer, no task work
        await super().run()

    def _encode(self, items: list[RequestSample]) -> bytes:
        return sample_encoder.encode(items[0])  # one sample per record (per_record 1)
