"""Serve-request parsing and validation (pure): vocabularies, limits, profile merging, the privacy user."""

from __future__ import annotations

import pytest

from adserver.error import ParamError
from adserver.params import ANONYMOUS_USER_ID, RequestParser, check_user_id, parse_query
from adserver.sync.profiles import Profile, ProfileTable
from index.geo import DEFAULT_GEO
from index.targeting import AdRequest

PROFILE = Profile(age=41, gender="M", income_bucket="L", device_type="Macbook", city="Delhi", state="Delhi",
                  country="India")  # fmt: skip


@pytest.fixture
def parser() -> RequestParser:
    return RequestParser(DEFAULT_GEO)


@pytest.fixture
def profiles() -> ProfileTable:
    return ProfileTable({"known": PROFILE, ANONYMOUS_USER_ID: PROFILE})


def test_parse_query_decodes_and_keeps_known_names() -> None:
    raw = b"device_type=Android+Mobile&city=New%20Delhi&junk=1&age=30&age=31&=x&flag"
    assert parse_query(raw) == {"device_type": "Android Mobile", "city": "New Delhi", "age": "31"}
    assert parse_query(b"") == {}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"city=", "city: empty"),
        (b"device_type=" + b"x" * 101, "device_type: longer than 100"),
        (b"city=%FF", "city: percent-encoded bytes are not UTF-8"),
        ("city=Münster".encode(), "non-ASCII"),
        (b"a=" + b"x" * 3000, "query string longer than 2048 bytes"),
    ],
)
def test_parse_query_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(ParamError, match=reason):
        parse_query(raw)


@pytest.mark.parametrize("user_id", ["u" * 65, "a b", "é", "a/b", "", "x\x00"])
def test_bad_user_ids(user_id: str) -> None:
    with pytest.raises(ParamError, match="user_id"):
        check_user_id(user_id)


def test_user_id_forms() -> None:
    for ok in ("u" * 64, ANONYMOUS_USER_ID, "8cf1b846-8f97-11f0-b7f6-0e087721c0e9", "a.b_c:d@e"):
        assert check_user_id(ok) == ok


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"device_type=Phone", "device_type: unknown value 'Phone'"),
        (b"gender=X", "gender: unknown value"),
        (b"income_bucket=rich", "income_bucket: unknown value"),
        (b"age=abc", "age: expected a whole number"),
        (b"age=-1", "age: expected a whole number"),
        (b"age=151", "age: expected a whole number"),
        (b"age=%EF%BC%92", "age: expected a whole number"),  # a full-width digit is not ASCII
    ],
)
def test_build_rejects(parser: RequestParser, profiles: ProfileTable, query: bytes, reason: str) -> None:
    with pytest.raises(ParamError, match=reason):
        parser.build("u1", query, profiles)
    with pytest.raises(ParamError):  # rejected queries are not cached: still rejected
        parser.build("u1", query, profiles)


def test_build_canonicalizes_and_resolves(parser: RequestParser, profiles: ProfileTable) -> None:
    request = parser.build("u1", b"device_type=iphone&city=PUNE&age=0&gender=f&income_bucket=h", profiles)
    assert request == AdRequest(user_id="u1", device_type="iPhone", city="Pune", state="Maharashtra",
                                country="India", age=0, gender="F", income_bucket="H")  # fmt: skip


def test_absent_means_unknown(parser: RequestParser, profiles: ProfileTable) -> None:
    assert parser.build("u1", b"", profiles) == AdRequest(user_id="u1", country="India")


def test_query_wins_over_profile(parser: RequestParser, profiles: ProfileTable) -> None:
    assert parser.build("known", b"", profiles) == AdRequest(
        user_id="known", device_type="Macbook", city="Delhi", state="Delhi", country="India", age=41,
        gender="M", income_bucket="L",
    )  # fmt: skip
    mixed = parser.build("known", b"age=22&gender=F&city=Surat", profiles)
    assert mixed == AdRequest(user_id="known", device_type="Macbook", city="Surat", state="Gujrat",
                              country="India", age=22, gender="F", income_bucket="L")  # fmt: skip


def test_privacy_user_gets_no_demographics(parser: RequestParser, profiles: ProfileTable) -> None:
    request = parser.build(ANONYMOUS_USER_ID, b"device_type=iPhone&city=Pune&age=30&gender=F&income_bucket=H",
                           profiles)  # fmt: skip
    assert request == AdRequest(user_id=ANONYMOUS_USER_ID, device_type="iPhone", city="Pune",
                                state="Maharashtra", country="India")  # fmt: skip
    # Its profile (if one existed) is not looked up.
    assert parser.build(ANONYMOUS_USER_ID, b"", profiles) == AdRequest(
        user_id=ANONYMOUS_USER_ID, country="India"
    )
    with pytest.raises(ParamError):  # and bad demographics are still rejected
        parser.build(ANONYMOUS_USER_ID, b"age=old", profiles)


def test_caches_are_bounded(profiles: ProfileTable) -> None:
    parser = RequestParser(DEFAULT_GEO, max_entries=4)
    for age in range(50):
        assert parser.build("u1", f"age={age}&city=c{age}".encode(), profiles).age == age
    assert len(parser._queries) <= 4 and len(parser._locations) <= 4
