"""The request sampler: which requests it picks, and the sample it builds (no Kafka: the queue only)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from adplatform.config import load_config
from adplatform.sample import ANONYMOUS, sample_decoder, sample_encoder
from adserver.sync.sampler import RequestSampler
from index.auction import run_auction
from index.explain import Loss
from index.index import TargetingIndex
from tests.index.index_factory import NOW_S, campaign, request

NO_DOTENV = Path("/nonexistent/.env")


def _sampler(rate: float) -> RequestSampler:
    config = dataclasses.replace(load_config({}, dotenv=NO_DOTENV), request_sample_rate=rate)
    return RequestSampler(config, rng=random.Random(7))


def test_rate_zero_never_draws_and_rate_one_always_picks() -> None:
    off, on, one_percent = _sampler(0.0), _sampler(1.0), _sampler(0.01)
    assert not any(off.pick() for _ in range(1000))
    assert all(on.pick() for _ in range(1000))
    picked = sum(one_percent.pick() for _ in range(100_000))
    assert 700 < picked < 1300


def test_a_sample_names_the_winner_the_runner_up_and_each_loss() -> None:
    index = TargetingIndex()
    index.apply(campaign(campaign_id="win", cpc_micros=5_000))
    index.apply(campaign(campaign_id="second", cpc_micros=3_000))
    index.apply(campaign(campaign_id="spent", cpc_micros=9_000))
    index.apply(campaign(campaign_id="pune", target_city="Pune"))
    index.block("spent")
    sampler = _sampler(1.0)
    req = request(user_id="user-42", city="Mumbai")
    result = run_auction(index, req, NOW_S, reserve_cpm_units=0, rng=random.Random(1))
    assert result is not None
    sampler.record(index, req, NOW_S, result)
    sampler.record(index, request(user_id="1111-1111-1111-1111", city="Pune", age=3), NOW_S + 10**7, None)
    served, unfilled = (sample_decoder.decode(sample_encoder.encode(s)) for s in sampler._items)
    assert (served.outcome, served.winner, served.runner_up, served.tie) == ("served", "win", "second", False)
    assert served.losses == (Loss("spent", "blocked"), Loss("second", "outbid"))
    assert served.clearing_cpm_units == result.clearing_cpm_units and served.city == "Mumbai"
    assert "user-42" not in sample_encoder.encode(served).decode() and len(served.user) == 16
    assert (unfilled.outcome, unfilled.winner, unfilled.user, unfilled.losses) == (
        "no_fill",
        None,
        ANONYMOUS,
        (),
    )
    assert sampler.sampled == 2
