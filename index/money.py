"""Money as integers.

Money that moves (budgets, charges, spend) is integer micro-units (1e-6 of the currency). Auction scores
(cpm) are integers in units of 1e-10 so they rank and price exactly: with cpc and cpa in micros,
``cpm = 0.0075·cpc + 0.0005·cpa`` is ``75·cpc_micros + 5·cpa_micros`` in 1e-10 units, with no rounding.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000
#: Scale of auction scores: one cpm unit is 1e-10 of the currency.
CPM_UNITS_PER_UNIT = 10_000_000_000
#: The largest amount we accept in any money field (10^12 currency units): keeps numbers sane.
MAX_MICROS = 10**18


class MoneyError(ValueError):
    """A money string that cannot be represented exactly in micro-units."""


def parse_micros(text: str, *, field: str = "amount") -> int:
    """Parse a decimal string (``"0.00066"``) into micro-units, exactly; reject anything finer or odd."""
    raw = text.strip()
    try:
        value = Decimal(raw)
    except (InvalidOperation, ValueError):
        raise MoneyError(f"{field}: not a number: {text!r}") from None
    if not value.is_finite():
        raise MoneyError(f"{field}: not a finite number: {text!r}")
    scaled = value * MICROS_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{field}: finer than a micro-unit (1e-6): {text!r}")
    micros = int(scaled)
    if abs(micros) > MAX_MICROS:
        raise MoneyError(f"{field}: too large: {text!r}")
    return micros


def format_micros(micros: int) -> str:
    """Render micro-units as an exact decimal string (``660`` → ``"0.000660"``)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{frac:06d}"


def micros_to_decimal(micros: int) -> Decimal:
    """Exact Decimal for a micro-unit amount (for NUMERIC columns)."""
    return Decimal(micros).scaleb(-6)


def cpm_units(cpc_micros: int, cpa_micros: int) -> int:
    """The original platform's ``cpm = 0.0075·cpc + 0.0005·cpa``, exact, in 1e-10 units."""
    return 75 * cpc_micros + 5 * cpa_micros


def cpm_units_to_decimal(units: int) -> Decimal:
    """Exact Decimal for a cpm in 1e-10 units."""
    return Decimal(units).scaleb(-10)
