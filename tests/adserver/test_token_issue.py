"""Request tokens as the serve route issues them: sealed (AES-GCM-SIV), unreadable without the key, one
spelling per token, rotation by key id, and the legacy HMAC tokens verified until they expire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from adplatform.config import TokenKey
from adserver.token import (
    MAC_BYTES,
    NONCE_BYTES,
    PAD_BYTES,
    RequestToken,
    TokenError,
    TokenSigner,
    _b64,
    _pad,
    _PrecomputedHmac,
    _unpad,
    aead_key,
)

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
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def legacy_issue(key: TokenKey, token: RequestToken) -> str:
    """A token as the ad server issued them before sealing (``<kid>.<payload>.<mac>``), written out with
    the standard library so the test does not trust the module's own legacy code."""
    payload = base64.urlsafe_b64encode(msgspec.msgpack.encode(token)).rstrip(b"=").decode()
    signed = f"{key.key_id}.{payload}"
    mac = hmac.new(key.secret, signed.encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def token(nonce: int, **fields: object) -> RequestToken:
    return msgspec.structs.replace(TOKEN, nonce=f"n{nonce}", **fields)


@pytest.mark.parametrize("secret", [b"s" * 16, b"k" * 64, b"l" * 65, b"m" * 300])
def test_precomputed_hmac_is_hmac_sha256(secret: bytes) -> None:
    for msg in (b"", b"k1.payload", b"x" * 1000):
        assert _PrecomputedHmac(secret).digest(msg) == hmac.new(secret, msg, hashlib.sha256).digest()


@pytest.mark.parametrize("size", range(0, 40))
def test_b64_is_unpadded_base64url(size: int) -> None:
    data = bytes((b * 37 + 250) % 256 for b in range(size))
    assert _b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("size", range(0, 100))
def test_pad_fills_to_the_bucket_and_unpads(size: int) -> None:
    data = bytes(range(size % 256))[:size] + b"\x01" * max(0, size - 256)
    padded = _pad(data)
    assert len(padded) % PAD_BYTES == 0 and len(data) < len(padded) <= len(data) + PAD_BYTES
    assert _unpad(padded) == data
    for bad in (b"", padded[:-1] + b"\x00", padded[:-1] + bytes((PAD_BYTES + 1,))):
        with pytest.raises(ValueError):
            _unpad(bad)


def test_sealed_part_is_the_fields_in_declared_order() -> None:
    """The format written out with ``cryptography`` directly: base64url(nonce ‖ AES-GCM-SIV ciphertext)
    under the HKDF key of the key id, with the key id authenticated; inside, msgpack of the fields as an
    array in declared order (reordering them would misread tokens in flight), padded."""
    kid, sealed_text = TokenSigner(KEYS, ttl_s=60).issue(TOKEN).split(".")
    assert kid == "k2"
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"adplatform request_id aes-gcm-siv v2 kid=k2"
    ).derive(b"s" * 16)
    assert aead_key(KEYS[0]) == key
    sealed = unb64(sealed_text)
    plain = AESGCMSIV(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], b"adp-rt2:k2")
    assert len(plain) % PAD_BYTES == 0
    decoded = msgspec.msgpack.decode(plain[: -plain[-1]])
    assert decoded == ["n1", "c1", 7, 1_700_000_000_000, "u1", 12_345, 660, 52_900, 30, "F", "iPhone", "Pune"]


def test_issue_verifies_and_rotates() -> None:
    signer = TokenSigner(KEYS, ttl_s=60)
    request_id = signer.issue(TOKEN)
    assert re.fullmatch(r"k2\.[A-Za-z0-9_-]+", request_id)
    assert signer.verify(request_id, now_ms=TOKEN.issued_ms + 1) == TOKEN
    # A worker with only the old key set first still verifies what the new key sealed.
    assert TokenSigner((KEYS[1], KEYS[0]), ttl_s=60).verify(request_id, now_ms=TOKEN.issued_ms) == TOKEN
    with pytest.raises(TokenError, match="unknown key"):
        TokenSigner((KEYS[1],), ttl_s=60).verify(request_id, now_ms=TOKEN.issued_ms)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(request_id, now_ms=TOKEN.issued_ms + 61_000)
    with pytest.raises(TokenError, match="future"):
        signer.verify(request_id, now_ms=TOKEN.issued_ms - 61_000)
    assert "secret" not in repr(signer) and "s" * 16 not in repr(signer)


def test_nothing_in_a_token_is_readable_without_the_key() -> None:
    """Decoding a request_id every way an onlooker might finds none of the values it carries, two tokens
    of one ad share nothing, and the length does not tell a cheap clearing price from a dear one."""
    secret_token = RequestToken(
        nonce="nonce-4f1c",
        campaign_id="CAMPAIGN-7731",
        campaign_version=424_242,
        issued_ms=1_700_000_000_000,
        user_id="USER-0042-zz",
        clearing_cpm_units=987_654_321,
        auction_cpc_micros=123_457,
        auction_cpa_micros=7_654_321,
        user_age=37,
        user_gender="Female",
        user_device_type="Android Mobile",
        user_city="Bhubaneswar",
    )
    signer = TokenSigner(KEYS, ttl_s=60)
    request_id = signer.issue(secret_token)
    sealed_text = request_id.split(".")[1]
    plain = msgspec.msgpack.encode(secret_token)
    needles = [
        value.encode()
        for value in (
            "nonce-4f1c",
            "CAMPAIGN-7731",
            "USER-0042-zz",
            "Female",
            "Android Mobile",
            "Bhubaneswar",
        )
    ]
    # The integers as msgpack writes them (a uint32 / uint64 with its type byte) and as big-endian bytes.
    for number in (424_242, 1_700_000_000_000, 987_654_321, 123_457, 7_654_321):
        needles.append(msgspec.msgpack.encode(number))
        needles.append(number.to_bytes(8, "big").lstrip(b"\0"))
    assert all(needle in plain for needle in needles)  # the needles are what a plain token would show
    haystacks = [request_id.encode(), unb64(sealed_text)]
    for shift in range(1, 4):  # base64 read from any offset
        haystacks.append(unb64(sealed_text[shift:][: (len(sealed_text) - shift) // 4 * 4]))
    for hay in haystacks:
        for needle in needles:
            assert needle not in hay
        for text in ("CAMPAIGN", "USER", "Bhubaneswar", "Female", "Android"):
            assert text.encode() not in hay and text.lower().encode() not in hay.lower()
    with pytest.raises(msgspec.DecodeError):
        msgspec.msgpack.decode(unb64(sealed_text), type=RequestToken)
    # One ad's token, issued twice, gives unrelated strings (a random nonce per token).
    again = signer.issue(secret_token)
    assert again != request_id and unb64(again.split(".")[1])[:16] != unb64(sealed_text)[:16]
    # Cheap and dear clearing prices (msgpack ints of 1 and 9 bytes) give tokens of one length.
    lengths = {
        len(signer.issue(msgspec.structs.replace(secret_token, clearing_cpm_units=units)))
        for units in (1, 200, 70_000, 5_000_000_000)
    }
    assert len(lengths) == 1


def test_tampered_or_moved_tokens_do_not_verify() -> None:
    """Every single-character change fails the AEAD tag; a sealed part moved under another key id fails
    too, even when both ids share a secret (HKDF binds the key to the id, the id is authenticated)."""
    signer = TokenSigner(KEYS, ttl_s=60)
    request_id = signer.issue(TOKEN)
    kid, sealed_text = request_id.split(".")
    for i in range(len(sealed_text)):
        for c in "AQgw_":  # varies the top, middle and low bits of a sextet
            if c == sealed_text[i]:
                continue
            with pytest.raises(TokenError):
                signer.verify(f"{kid}.{sealed_text[:i]}{c}{sealed_text[i + 1 :]}", now_ms=TOKEN.issued_ms)
    twins = TokenSigner((TokenKey("a1", b"t" * 16), TokenKey("b1", b"t" * 16)), ttl_s=60)
    sealed_a = twins.issue(TOKEN).split(".")[1]
    with pytest.raises(TokenError, match="signature"):
        twins.verify(f"b1.{sealed_a}", now_ms=TOKEN.issued_ms)
    for short in ("", "AAAA", _b64(b"\0" * (NONCE_BYTES + 15))):
        with pytest.raises(TokenError):
            signer.verify(f"{kid}.{short}", now_ms=TOKEN.issued_ms)
    for malformed in ("k2", "k2.a.b.c", "k2." + "A" * 600, "k2.AAAé"):
        with pytest.raises(TokenError, match="malformed"):
            signer.verify(malformed, now_ms=TOKEN.issued_ms)


def test_only_the_canonical_spelling_of_a_token_verifies() -> None:
    """The sealed part's last base64 character carries 2 or 4 spare bits, and base64 decoders skip
    stray characters and padding: other strings decode to the same bytes. Each would be another
    request_id for the same ad (another de-duplication key, another charge), so only the issued
    spelling may verify."""
    signer = TokenSigner(KEYS, ttl_s=60)
    spare_bit_spellings = 0
    for nonce in range(20):
        # User ids 0, 32 and 64 bytes longer walk the sealed length through all three residues mod 3.
        request_id = signer.issue(token(nonce, user_id="u" * (1 + 32 * (nonce % 3))))
        head, sealed = request_id.split(".")
        same_bytes = [
            f"{head}.{sealed[:-1]}{c}"
            for c in ALPHABET
            if c != sealed[-1] and unb64(sealed[:-1] + c) == unb64(sealed)
        ]
        spare_bit_spellings += len(same_bytes)
        others = [*same_bytes, f"{request_id}=", f"{request_id}==", f"{head}.{sealed[:5]}!{sealed[5:]}"]
        others.append(f"{head}.{sealed[:5]}+{sealed[5:]}")
        for other in others:
            assert other != request_id
            with pytest.raises(TokenError):
                signer.verify(other, now_ms=TOKEN.issued_ms)
        assert signer.verify(request_id, now_ms=TOKEN.issued_ms).nonce == f"n{nonce}"
    assert spare_bit_spellings > 0  # the test did meet malleable spellings


def test_legacy_tokens_verify_until_they_expire() -> None:
    """Tokens issued before sealing (readable, HMAC-signed) are still charged, under the same key ids and
    the same TTL; an unknown key id, an expired one or a re-spelled MAC is refused. None is issued."""
    signer = TokenSigner(KEYS, ttl_s=60)
    for key in KEYS:
        old = legacy_issue(key, TOKEN)
        assert old.count(".") == 2
        assert signer.verify(old, now_ms=TOKEN.issued_ms + 59_000) == TOKEN
        with pytest.raises(TokenError, match="expired"):
            signer.verify(old, now_ms=TOKEN.issued_ms + 61_000)
    # Removing a key id from ADP_TOKEN_KEYS retires its legacy tokens with it.
    with pytest.raises(TokenError, match="unknown key"):
        TokenSigner((KEYS[0],), ttl_s=60).verify(legacy_issue(KEYS[1], TOKEN), now_ms=TOKEN.issued_ms)
    forged = legacy_issue(TokenKey("k2", b"not-the-secret-at-all"), TOKEN)
    with pytest.raises(TokenError, match="signature"):
        signer.verify(forged, now_ms=TOKEN.issued_ms)
    assert signer.issue(TOKEN).count(".") == 1


def test_only_the_canonical_spelling_of_a_legacy_mac_verifies() -> None:
    """A 16-byte MAC is 22 base64 characters whose last one carries 2 bits: 15 other characters decode
    to the same bytes; only the issued spelling may verify (see the sealed-format test for why)."""
    signer = TokenSigner(KEYS, ttl_s=60)
    for nonce in range(20):
        request_id = legacy_issue(KEYS[0], token(nonce))
        head, mac = request_id.rsplit(".", 1)
        same_bytes = [
            f"{head}.{mac[:-1]}{c}" for c in ALPHABET if c != mac[-1] and unb64(mac[:-1] + c) == unb64(mac)
        ]
        assert len(same_bytes) == 15
        for other in same_bytes:
            with pytest.raises(TokenError, match="signature"):
                signer.verify(other, now_ms=TOKEN.issued_ms)
        assert signer.verify(request_id, now_ms=TOKEN.issued_ms).nonce == f"n{nonce}"
