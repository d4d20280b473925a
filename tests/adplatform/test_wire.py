"""``served-ads`` records: several served ads per record as JSON Lines, read back exactly; the one-object
records written before read the same; a bad line costs only itself."""

from __future__ import annotations

from decimal import Decimal

from adplatform.wire import ServedAd, decode_served, encoder


def _ad(n: int) -> ServedAd:
    return ServedAd(
        request_id=f"r{n}",
        campaign_id="c1",
        user_id=f"u{n}",
        served_at_ms=1_760_000_000_000 + n,
        auction_cpm=Decimal("0.0000441980"),
        auction_cpc=Decimal("0.001799"),
        auction_cpa=Decimal("0.061411"),
        bidders=2,
        city="Pune",
        age=30 + n,
    )


def test_a_record_of_several_ads_reads_back_exactly() -> None:
    ads = [_ad(n) for n in range(64)]
    assert decode_served(encoder.encode_lines(ads)) == (ads, [])


def test_a_one_object_record_as_written_before_reads_the_same() -> None:
    assert decode_served(encoder.encode(_ad(1))) == ([_ad(1)], [])


def test_a_bad_line_is_skipped_with_its_number_and_the_others_kept() -> None:
    value = encoder.encode_lines([_ad(1)]) + b"not json\n" + encoder.encode_lines([_ad(2)])
    value += b'{"request_id": "x"}\n'  # JSON, but not a served ad
    ads, reasons = decode_served(value)
    assert ads == [_ad(1), _ad(2)]
    assert [r.split(":")[0] for r in reasons] == ["line 2", "line 4"]
    assert "missing required field" in reasons[1]


def test_a_record_without_an_ad_is_one_skip() -> None:
    assert decode_served(b"") == ([], ["empty record"])
    assert decode_served(b"\n\n") == ([], ["empty record"])
    assert decode_served(b"not json") == ([], ["line 1: JSON is malformed: invalid character (byte 4)"])
