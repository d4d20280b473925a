"""The geo table: known cities, the state and country each implies, and population weights.

Location targeting is a hierarchy (city ⊂ state ⊂ country). A request names any part of it; this module
turns that into the full location the targeting rules compare against. Names are spelled exactly as in the
original platform's seed data, misspellings included ("Gujrat", "Madhya pradesh", "Vadodra"), because
campaigns target those strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

DEFAULT_COUNTRY: Final = "India"


class City(NamedTuple):
    """One known city with its state, country and a rough population (for drawing simulated users)."""

    name: str
    state: str
    country: str
    population: int


class Location(NamedTuple):
    """A request's location after resolution; ``None`` means the request does not say (matches only All)."""

    city: str | None
    state: str | None
    country: str


#: The original simulator's 17 cities. Populations are rough city figures, only used as draw weights.
INDIA_CITIES: Final = (
    City("Mumbai", "Maharashtra", "India", 12_400_000),
    City("Delhi", "Delhi", "India", 11_000_000),
    City("Bangalore", "Karnataka", "India", 8_400_000),
    City("Hyderabad", "Telangana", "India", 6_800_000),
    City("Ahmedabad", "Gujrat", "India", 5_600_000),
    City("Chennai", "Tamil Nadu", "India", 4_600_000),
    City("Kolkata", "West Bengal", "India", 4_500_000),
    City("Surat", "Gujrat", "India", 4_500_000),
    City("Pune", "Maharashtra", "India", 3_100_000),
    City("Jaipur", "Rajasthan", "India", 3_000_000),
    City("Lucknow", "Uttar Pradesh", "India", 2_800_000),
    City("Nagpur", "Maharashtra", "India", 2_400_000),
    City("Indore", "Madhya pradesh", "India", 1_960_000),
    City("Patna", "Bihar", "India", 1_680_000),
    City("Vadodra", "Gujrat", "India", 1_670_000),
    City("Ludhiana", "Punjab", "India", 1_600_000),
    City("Coimbatore", "Tamil Nadu", "India", 1_050_000),
)


@dataclass(frozen=True)
class GeoTable:
    """Resolves a request's (city, state, country) against known cities; lookups are case-insensitive."""

    cities: tuple[City, ...] = INDIA_CITIES
    default_country: str = DEFAULT_COUNTRY
    _by_city: dict[str, City] = field(init=False, repr=False, compare=False)
    _state_country: dict[str, tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen dataclass: derived lookup tables are set once here, through object.__setattr__.
        by_city = {c.name.casefold(): c for c in self.cities}
        state_country = {c.state.casefold(): (c.state, c.country) for c in self.cities}
        object.__setattr__(self, "_by_city", by_city)
        object.__setattr__(self, "_state_country", state_country)

    def resolve(self, city: str | None, state: str | None, country: str | None) -> Location:
        """Full location of a request: a known city implies its state and country (the table wins over
        what the request says), a known state implies its country, a missing country is the default."""
        if city:
            known = self._by_city.get(city.casefold())
            if known is not None:
                return Location(known.name, known.state, known.country)
        else:
            city = None
        if state:
            known_state = self._state_country.get(state.casefold())
            if known_state is not None:
                return Location(city, known_state[0], known_state[1])
        else:
            state = None
        return Location(city, state, country or self.default_country)

    def city_weights(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """City names and population weights, ready for ``random.Random.choices``."""
        return tuple(c.name for c in self.cities), tuple(c.population for c in self.cities)

    def city(self, name: str) -> City | None:
        """The known city called ``name`` (case-insensitive), if any."""
        return self._by_city.get(name.casefold())


DEFAULT_GEO: Final = GeoTable()
