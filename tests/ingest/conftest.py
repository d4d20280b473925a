"""Shared rows for the ingest unit tests."""

from __future__ import annotations

import pytest

#: The seed file's first row.
GOOD_ROW: dict[str, str] = {
    "text": "Transmission Oil Cooler Assembly for 2014-2017 Toyota Highlander",
    "category": "Tools & Hardware",
    "keywords": "automotive,oils,fluids",
    "campaign_id": "8cf1b846-8f97-11f0-b7f6-0e087721c0e9",
    "action": "New Campaign",
    "target_gender": "F",
    "target_age_range": "{'start': '20', 'end': '45'}",
    "target_city": "All",
    "target_state": "All",
    "target_country": "India",
    "target_income_bucket": "M",
    "target_device": "All",
    "cpc": "0.00066",
    "cpa": "0.0529",
    "budget": "500",
    "date_range": "{'start': '2025-09-12', 'end': '2025-09-13'}",
    "time_range": "{'start': '5:00:00', 'end': '18:00:00'}",
}


@pytest.fixture
def good_row() -> dict[str, str]:
    return dict(GOOD_ROW)
