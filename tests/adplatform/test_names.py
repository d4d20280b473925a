"""Redis key layout: a campaign's keys share its hash tag, and the tag gives the campaign back."""

from __future__ import annotations

import pytest

from adplatform import names


@pytest.mark.parametrize("campaign_id", ["c1", "a-b_C-9", "x" * 64, "123"])
def test_campaign_id_of_inverts_budget_key_and_dedup_key(campaign_id: str) -> None:
    assert names.campaign_id_of(names.budget_key(campaign_id)) == campaign_id
    # The event id is opaque and may hold anything, braces included: only the hash tag counts.
    for event_id in ("r1:click", "a{b}c", "}{"):
        assert names.campaign_id_of(names.dedup_key(campaign_id, event_id)) == campaign_id


@pytest.mark.parametrize(
    "key",
    [names.BLOCKED_SET, names.PACER_LEASE + ":42", "adp:camp:{}", "adp:camp:{c1", "other:camp:{c1}", "c1"],
)
def test_campaign_id_of_rejects_other_keys(key: str) -> None:
    with pytest.raises(ValueError, match="not a campaign key"):
        names.campaign_id_of(key)


def test_the_budget_channel_is_per_logical_database() -> None:
    assert names.budget_channel(0) == names.CHANNEL_BUDGET  # what running services already use
    assert len({names.budget_channel(db) for db in range(16)}) == 16
