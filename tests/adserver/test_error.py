"""The ad server's exceptions share one base class, as ``adserver/error.py`` promises."""

from __future__ import annotations

import pytest

from adserver.error import AdServerError, ParamError
from adserver.feedback import FeedbackError
from adserver.token import TokenError


@pytest.mark.parametrize("error", [FeedbackError, TokenError])
def test_every_ad_server_error_derives_from_the_one_base(error: type[Exception]) -> None:
    assert issubclass(error, AdServerError)


def test_param_error_is_the_shared_parsers() -> None:
    # The request parser is shared with the admin service (adplatform.params): its error is a ValueError.
    assert ParamError.__module__ == "adplatform.params" and issubclass(ParamError, ValueError)


def test_token_error_stays_a_value_error() -> None:
    # Callers that caught ValueError before the common base keep working.
    assert issubclass(TokenError, ValueError)
