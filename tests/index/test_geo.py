from __future__ import annotations

from index.geo import DEFAULT_GEO, INDIA_CITIES, GeoTable, Location


def test_table_has_the_seed_cities_and_spellings() -> None:
    states = {c.name: c.state for c in INDIA_CITIES}
    assert len(states) == 17
    assert states["Vadodra"] == "Gujrat"
    assert states["Surat"] == "Gujrat"
    assert states["Indore"] == "Madhya pradesh"
    assert states["Nagpur"] == "Maharashtra"
    assert states["Coimbatore"] == "Tamil Nadu"
    assert {c.country for c in INDIA_CITIES} == {"India"}


def test_known_city_implies_state_and_country() -> None:
    assert DEFAULT_GEO.resolve("Pune", None, None) == Location("Pune", "Maharashtra", "India")
    # The table wins over what the request claims, and lookups ignore case.
    assert DEFAULT_GEO.resolve("pune", "Goa", "Nepal") == Location("Pune", "Maharashtra", "India")


def test_known_state_implies_country() -> None:
    assert DEFAULT_GEO.resolve(None, "gujrat", None) == Location(None, "Gujrat", "India")


def test_unknown_city_keeps_request_values_and_default_country() -> None:
    assert DEFAULT_GEO.resolve("Goa", "Goa", None) == Location("Goa", "Goa", "India")
    assert DEFAULT_GEO.resolve("", "", "") == Location(None, None, "India")
    assert GeoTable(default_country="Nepal").resolve(None, None, None) == Location(None, None, "Nepal")
    assert DEFAULT_GEO.resolve(None, None, "Nepal") == Location(None, None, "Nepal")


def test_city_weights_align() -> None:
    names, weights = DEFAULT_GEO.city_weights()
    assert len(names) == len(weights) == 17
    assert names[weights.index(max(weights))] == "Mumbai"
