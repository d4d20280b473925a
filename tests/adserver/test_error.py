"""The ad server's exceptions share one base class, as ``adserver/error.py`` promises."""

from __future__ import annotations

import pytest

from adserver.error import AdServerError, ParamError
from adserver.feedback import FeedbackError
from adserver.token import TokenError


@pytest.mark.parametrize("error", [ParamError, FeedbackError, TokenError])
def test_every_ad_server_error_derives_from_the_one_base(error: type[Exception]) -> None:
    assert issubclass(error, AdServerError)


def test_token_error_stays_a_value_error() -> None:
    # Callers that caught ValueError before the common base keep working.
    assert issubclass(TokenError, ValueError)
