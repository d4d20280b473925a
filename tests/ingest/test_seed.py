"""The real seed file, when present (the project must not depend on it, so this skips without it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from index.campaign import Campaign
from ingest.csvfile import RowError, read_campaign_csv, validate_row
from ingest.instruction import enrich, instruction_from_row

_CANDIDATES = (
    Path("/work/shared/data/campaigns_seed.csv"),
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "campaigns_seed.csv",
)
SEED = next((p for p in _CANDIDATES if p.is_file()), None)


@pytest.mark.skipif(SEED is None, reason="campaigns_seed.csv not available")
def test_seed_enriches_without_errors_and_folds() -> None:
    assert SEED is not None
    latest: dict[str, Campaign] = {}
    rows = 0
    for version, item in enumerate(read_campaign_csv(SEED), start=1):
        assert not isinstance(item, RowError), str(item)
        _, row = item
        validate_row(row)
        campaign = enrich(instruction_from_row(row), version=version, now_s=0)
        latest[campaign.campaign_id] = campaign
        rows += 1
    assert rows == 7_677
    assert len(latest) == 4_242
    assert Counter(c.status for c in latest.values()) == {"Active": 2_110, "Inactive": 2_132}
