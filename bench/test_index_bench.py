"""Benchmarks of the targeting index and auction (the ad server's hot path) over generated corpora.

Each round serves a batch of requests, so per-request figures are ``mean / BATCH``; ``extra_info`` holds
them next to references measured in the same run (a dict lookup, and a brute-force scan of 1,000
campaigns), so results read as ratios rather than lone absolute times; ``reference_s`` (the brute-force
scan) is what ``make bench``'s regression check divides by. 1M campaigns only with ``ADP_BENCH_1M=1``;
``ADP_BENCH_SIZES=2000,5000`` replaces the sizes (the CI smoke run uses a tiny one).
"""

from __future__ import annotations

import itertools
import os
import random
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.index_corpus import NOW_S, make_campaigns, make_requests
from index.auction import run_auction, second_price
from index.campaign import Campaign
from index.index import TargetingIndex
from index.targeting import AdRequest, matches

BATCH = 1_000
SIZES = [int(n) for n in os.environ.get("ADP_BENCH_SIZES", "10000,100000").split(",")] + (
    [1_000_000] if os.environ.get("ADP_BENCH_1M") == "1" else []
)


@dataclass(frozen=True)
class Corpus:
    campaigns: list[Campaign]
    index: TargetingIndex
    index_bytes: int


@dataclass(frozen=True)
class Reference:
    """Per-request seconds of the reference operations, measured once per session."""

    dict_lookup_s: float
    brute_force_1k_s: float


def _best_per_call(fn: Callable[[], object], calls: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=5)) / calls


@pytest.fixture(scope="session")
def requests() -> list[AdRequest]:
    return make_requests(BATCH)


@pytest.fixture(scope="session")
def reference(requests: list[AdRequest]) -> Reference:
    campaigns = make_campaigns(1_000, seed=99)
    by_id = {c.campaign_id: c for c in campaigns}
    keys = [campaigns[i % len(campaigns)].campaign_id for i in range(BATCH)]
    sample = requests[:50]

    def lookups() -> None:
        for k in keys:
            by_id[k]  # the lookup is the work being measured

    def brute_force() -> None:
        for r in sample:
            [c for c in campaigns if matches(c, r, NOW_S)]

    return Reference(_best_per_call(lookups, len(keys)), _best_per_call(brute_force, len(sample)))


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n // 1000}k" if n >= 1000 else str(n))
def corpus(request: pytest.FixtureRequest) -> Corpus:
    campaigns = make_campaigns(request.param)
    # The campaigns exist before tracing starts: what is measured is the index's own overhead.
    tracemalloc.start()
    index = TargetingIndex()
    index.apply_all(campaigns)
    index.warm()  # every city's candidate list built, as after a server's warm-up
    index_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return Corpus(campaigns, index, index_bytes)


def _report(benchmark: BenchmarkFixture, reference: Reference, per_call: int, corpus: Corpus) -> None:
    n = len(corpus.campaigns)
    benchmark.extra_info["campaigns"] = n
    benchmark.extra_info["index_bytes_per_campaign"] = round(corpus.index_bytes / n, 1)
    benchmark.extra_info["ref_dict_lookup_us"] = round(reference.dict_lookup_s * 1e6, 3)
    benchmark.extra_info["ref_brute_force_1k_us"] = round(reference.brute_force_1k_s * 1e6, 1)
    benchmark.extra_info["reference_s"] = reference.brute_force_1k_s  # for the regression check
    stats = benchmark.stats
    if stats is None:  # benchmarks disabled: the function ran once, nothing to report
        return
    per_op_s = stats.stats.min / per_call
    benchmark.extra_info["per_op_us"] = round(per_op_s * 1e6, 3)
    benchmark.extra_info["x_dict_lookup"] = round(per_op_s / reference.dict_lookup_s, 1)
    benchmark.extra_info["x_brute_force_1k"] = round(per_op_s / reference.brute_force_1k_s, 4)


def test_lookup_and_auction(
    benchmark: BenchmarkFixture, corpus: Corpus, requests: list[AdRequest], reference: Reference
) -> None:
    index, rng = corpus.index, random.Random(5)

    def serve() -> int:
        won = 0
        for r in requests:
            if run_auction(index, r, NOW_S, reserve_cpm_units=10_000, rng=rng) is not None:
                won += 1
        return won

    assert benchmark(serve) > 0
    _report(benchmark, reference, len(requests), corpus)


def test_eligible_set(
    benchmark: BenchmarkFixture, corpus: Corpus, requests: list[AdRequest], reference: Reference
) -> None:
    """The full eligible list (not the hot path: it walks the whole candidate list of the location)."""
    index, sample = corpus.index, requests[:20]

    def scan() -> int:
        return sum(len(index.eligible(r, NOW_S)) for r in sample)

    assert benchmark(scan) > 0
    _report(benchmark, reference, len(sample), corpus)


def test_update(benchmark: BenchmarkFixture, corpus: Corpus, reference: Reference) -> None:
    """One ``apply`` of a new version (new bid) of a random campaign, with every city list built."""
    index, campaigns, rng = corpus.index, corpus.campaigns, random.Random(9)
    versions = itertools.count(2)
    picks = [campaigns[rng.randrange(len(campaigns))] for _ in range(100)]

    def update() -> None:
        for c in picks:
            index.apply(msgspec.structs.replace(c, version=next(versions), cpm_units=rng.randrange(10**6)))

    benchmark(update)
    _report(benchmark, reference, len(picks), corpus)


def test_reference_brute_force_auction_1k(benchmark: BenchmarkFixture, requests: list[AdRequest]) -> None:
    """Reference: what a scan-everything server pays per request with only 1,000 campaigns."""
    campaigns, rng, sample = make_campaigns(1_000, seed=99), random.Random(5), requests[:50]

    def serve() -> None:
        for r in sample:
            second_price([c for c in campaigns if matches(c, r, NOW_S)], reserve_cpm_units=10_000, rng=rng)

    benchmark(serve)
