"""The serve route's pre-encoded 200 bodies are byte for byte what encoding the whole dict gives."""

from __future__ import annotations

import msgspec
import orjson
from hypothesis import given
from hypothesis import strategies as st

from adserver.serve import AdBodies
from tests.index.index_factory import campaign

#: What a request_id is made of: an alphanumeric key id, a dot, base64url.
REQUEST_IDS = st.from_regex(r"[A-Za-z0-9]{1,16}\.[A-Za-z0-9_-]{1,300}", fullmatch=True)


def whole(text: str, request_id: str, campaign_id: str, category: str) -> bytes:
    return orjson.dumps(
        {"text": text, "request_id": request_id, "campaign_id": campaign_id, "category": category}
    )


@given(text=st.text(), category=st.text(), campaign_id=st.text(min_size=1), request_id=REQUEST_IDS)
def test_body_equals_the_whole_encoding(text: str, category: str, campaign_id: str, request_id: str) -> None:
    c = campaign(campaign_id=campaign_id, text=text, category=category)
    bodies = AdBodies()
    assert bodies.body(c, request_id) == whole(text, request_id, campaign_id, category)
    assert bodies.body(c, "k.x") == whole(text, "k.x", campaign_id, category)  # the cached parts


def test_an_updated_campaign_is_encoded_again() -> None:
    bodies = AdBodies()
    old = campaign(campaign_id="c1", text="old text")
    assert orjson.loads(bodies.body(old, "k.a"))["text"] == "old text"
    new = msgspec.structs.replace(old, version=2, text="new text")
    assert orjson.loads(bodies.body(new, "k.b"))["text"] == "new text"
