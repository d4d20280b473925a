"""Request tokens as the serve route issues them: the fast HMAC equals the standard one."""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec
import pytest

from adplatform.config import TokenKey
from adserver.token import MAC_BYTES, RequestToken, TokenError, TokenSigner, _b64, _PrecomputedHmac

KEYS = (TokenKey("k2", b"s" * 16), TokenKey("k1", b"old-secret-still-valid"))
TOKEN = RequestToken(
    nonce="n1",
    campaign_id="c1",
    campaign_version=7,
    issued_ms=1_700_000_000_000,
    user_id="u1",
    clearing_cpm_units=12_345,
    auction_cpc_micros=660,
    auction_cpa_micros=52_900,
    user_age=30,
    user_gender="F",
    user_device_type="iPhone",
    user_city="Pune",
)


@pytest.mark.parametrize("secret", [b"s" * 16, b"k" * 64, b"l" * 65, b"m" * 300])
def test_precomputed_hmac_is_hmac_sha256(secret: bytes) -> None:
    for msg in (b"", b"k1.payload", b"x" * 1000):
        assert _PrecomputedHmac(secret).digest(msg) == hmac.new(secret, msg, hashlib.sha256).digest()


@pytest.mark.parametrize("size", range(0, 40))
def test_b64_is_unpadded_base64url(size: int) -> None:
    data = bytes((b * 37 + 250) % 256 for b in range(size))
    assert _b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_payload_is_the_fields_in_declared_order() -> None:
    """Tokens in flight were encoded as an array in this order: reordering fields would misread them."""
    payload = TokenSigner(KEYS, ttl_s=60).issue(TOKEN).split(".")[1]
    decoded = msgspec.msgpack.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded == ["n1", "c1", 7, 1_700_000_000_000, "u1", 12_345, 660, 52_900, 30, "F", "iPhone", "Pune"]


def test_issue_verifies_and_rotates() -> None:
    signer = TokenSigner(KEYS, ttl_s=60)
    request_id = signer.issue(TOKEN)
    kid, payload, mac = request_id.split(".")
    assert kid == "k2"
    expected = hmac.new(b"s" * 16, f"{kid}.{payload}".encode(), hashlib.sha256).digest()[:MAC_BYTES]
    assert mac == base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
    assert signer.verify(request_id, now_ms=TOKEN.issued_ms + 1) == TOKEN
    # A worker with only the old key set first still verifies what the new key signed.
    assert TokenSigner((KEYS[1], KEYS[0]), ttl_s=60).verify(request_id, now_ms=TOKEN.issued_ms) == TOKEN
    with pytest.raises(TokenError, match="unknown key"):
        TokenSigner((KEYS[1],), ttl_s=60).verify(request_id, now_ms=TOKEN.issued_ms)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(request_id, now_ms=TOKEN.issued_ms + 61_000)


def test_only_the_canonical_spelling_of_a_mac_verifies() -> None:
    """A 16-byte MAC is 22 base64 characters whose last one carries 2 bits: 15 other characters decode
    to the same bytes. Each would be another request_id for the same ad (another de-duplication key,
    another charge), so only the issued spelling may verify."""
    signer = TokenSigner(KEYS, ttl_s=60)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for nonce in range(20):
        request_id = signer.issue(
            RequestToken(
                nonce=f"n{nonce}",
                campaign_id="c1",
                campaign_version=1,
                issued_ms=TOKEN.issued_ms,
                user_id="u1",
                clearing_cpm_units=1,
                auction_cpc_micros=1,
                auction_cpa_micros=1,
            )
        )
        head, mac = request_id.rsplit(".", 1)
        same_bytes = [
            f"{head}.{mac[:-1]}{c}"
            for c in alphabet
            if c != mac[-1]
            and base64.urlsafe_b64decode(mac[:-1] + c + "==") == base64.urlsafe_b64decode(mac + "==")
        ]
        assert len(same_bytes) == 15
        for other in same_bytes:
            with pytest.raises(TokenError, match="signature"):
                signer.verify(other, now_ms=TOKEN.issued_ms)
        assert signer.verify(request_id, now_ms=TOKEN.issued_ms).nonce == f"n{nonce}"
