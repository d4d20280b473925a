"""Sealed request tokens: the ``request_id`` a served ad carries, so feedback needs no lookup.

Format: ``<kid>.<sealed>`` where ``sealed`` is base64url(nonce ‖ AES-GCM-SIV(key[kid], nonce,
pad(msgpack(RequestToken)), aad="adp-rt2:<kid>")): authenticated encryption, so whoever holds a request_id
learns nothing of what it carries (campaign, prices, user, profile) and cannot alter or forge one. Each
key's AEAD key is derived from its ``ADP_TOKEN_KEYS`` secret by HKDF-SHA256 with the key id in ``info``.
The key id selects the key, so keys rotate without breaking ads in flight: seal with the new key, keep
opening with the old one until its tokens expire. The AEAD tag is checked in constant time by the
library, and nothing is decoded before it is.

Tokens of the previous format (``<kid>.<payload>.<mac>``, base64url(msgpack) with a truncated
HMAC-SHA256; readable by anyone) are still verified, never issued, under the same key ids and the same
TTL, so feedback for ads served before the upgrade is charged. TODO(#17): remove ``_LegacyVerifier``
once every deployment has run the sealed format for longer than its token TTL.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from adplatform.config import TokenKey
from adserver.error import AdServerError
from adserver.request_token import RequestToken

MAX_TOKEN_CHARS = 512
#: Bytes of the random AEAD nonce at the front of the sealed part (AES-GCM-SIV's 96-bit nonce).
NONCE_BYTES = 12
#: The plaintext is padded to a multiple of this, so the token's length does not tell the width of the
#: clearing price's msgpack integer or a short city from a long one (only which bucket the total is in).
PAD_BYTES = 32
#: Bytes of the legacy format's truncated HMAC-SHA256 (verified only; see the module docstring).
MAC_BYTES = 16
#: Nonces drawn from the OS per ``os.urandom`` call (one system call per 256 tokens instead of one each).
NONCE_BATCH = 256
_AAD_PREFIX = "adp-rt2:"
_HKDF_INFO = b"adplatform request_id aes-gcm-siv v2 kid="

__all__ = ["RequestToken", "TokenError", "TokenSigner", "aead_key", "digest"]


class TokenError(AdServerError, ValueError):
    """A request_id that is malformed, forged, tampered with, sealed by an unknown key, or expired."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RequestToken)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """Unpadded base64url (``base64.urlsafe_b64encode`` without its two Python-level wrappers)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _unb64(text: str) -> bytes:
    """``base64.urlsafe_b64decode`` of unpadded ``text``, step for step (ASCII bytes, ``-_`` to ``+/``,
    non-strict ``a2b_base64``) without its Python-level wrappers: a third of the time."""
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))


#: ``_PADDING[n]``: n bytes each equal to n (built once; building them cost a third of ``_pad``).
_PADDING = tuple(bytes((n,)) * n for n in range(PAD_BYTES + 1))


def _pad(data: bytes) -> bytes:
    """``data`` then n bytes (1 ≤ n ≤ PAD_BYTES) each equal to n, to the next multiple of PAD_BYTES."""
    return data + _PADDING[PAD_BYTES - len(data) % PAD_BYTES]


def _unpad(data: bytes) -> bytes:
    n = data[-1] if data else 0
    if not 1 <= n <= PAD_BYTES or n > len(data):
        raise ValueError("bad padding")
    return data[:-n]


#: Unused random nonces of this process. A forked child starts empty, so it never repeats its parent's
#: (harmless under AES-GCM-SIV, see ``_Sealer``, but not something to lean on).
_NONCES: list[bytes] = []
os.register_at_fork(after_in_child=_NONCES.clear)


def _refill_nonces() -> bytes:
    batch = os.urandom(NONCE_BYTES * NONCE_BATCH)
    _NONCES.extend(batch[i : i + NONCE_BYTES] for i in range(NONCE_BYTES, len(batch), NONCE_BYTES))
    return batch[:NONCE_BYTES]


def aead_key(key: TokenKey) -> bytes:
    """The 256-bit AES-GCM-SIV key of ``key``: HKDF-SHA256 of its secret, bound to its key id, so a
    secret reused under two ids gives two keys and the AEAD never uses the legacy HMAC's raw secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO + key.key_id.encode())
    return hkdf.derive(key.secret)


class _Sealer:
    """One key id's AEAD. AES-GCM-SIV with a random 96-bit nonce per token: nonce-misuse resistant, so
    a repeated nonce (2^-96 per pair; or a broken RNG, a forked worker) reveals at most that two
    plaintexts are equal, and ours never are (each carries its own ``nonce`` field). With AES-GCM or
    ChaCha20-Poly1305 the same accident would leak the two tokens' XOR and the authentication key, that
    is forged request_ids, and random nonces would cap a key near 2^32 tokens (days at full QPS).
    The price is about a microsecond per token (measured in the issue #17 report)."""

    __slots__ = ("_aad", "_aead", "kid")

    def __init__(self, key: TokenKey) -> None:
        self.kid = key.key_id
        self._aead = AESGCMSIV(aead_key(key))
        # The key id and the format are authenticated: a sealed part moved under another key id, or read
        # by a future format, fails the tag rather than being misread.
        self._aad = (_AAD_PREFIX + key.key_id).encode("ascii")

    def seal(self, plaintext: bytes) -> bytes:
        nonce = _NONCES.pop() if _NONCES else _refill_nonces()
        return nonce + self._aead.encrypt(nonce, plaintext, self._aad)

    def open(self, sealed: bytes) -> bytes:
        """Raises ``InvalidTag`` unless ``sealed`` was sealed by this key (the tag check is the library's,
        constant-time); ``ValueError`` when too short to hold a nonce and a tag."""
        if len(sealed) < NONCE_BYTES + 16:
            raise ValueError("too short")
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad)


class _PrecomputedHmac:
    """HMAC-SHA256 with the key's inner and outer pad states hashed once (RFC 2104): each MAC then costs
    two state copies and two short updates, about 2.5x faster than ``hmac.new``.
    Produces exactly ``hmac.new(secret, msg, sha256).digest()``. Legacy tokens only."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        block = hashlib.sha256().block_size
        key = hashlib.sha256(secret).digest() if len(secret) > block else secret
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _legacy_payload(macs: dict[str, _PrecomputedHmac], kid: str, payload: str, mac_text: str) -> bytes:
    """The msgpack of a legacy ``<kid>.<payload>.<mac>`` token, once its MAC is checked."""
    key_mac = macs.get(kid)
    if key_mac is None:
        raise TokenError("request_id signed by an unknown key")
    # Compare the MAC's text, not its decoded bytes: base64 is malleable in its last character's
    # spare bits, and a second spelling of one token would be a second request_id, so a second
    # de-duplication key and a second charge.
    expected = _b64(key_mac.digest(f"{kid}.{payload}".encode("ascii"))[:MAC_BYTES])
    if not hmac.compare_digest(mac_text, expected):
        raise TokenError("request_id signature does not match")
    return _unb64(payload)


class TokenSigner:
    """Issues (seals) and verifies (opens) request tokens with a set of keys; the first key seals."""

    def __init__(self, keys: tuple[TokenKey, ...], *, ttl_s: int) -> None:
        if not keys:
            raise ValueError("at least one token key is required")
        self._sealers = {k.key_id: _Sealer(k) for k in keys}
        self._sealing = self._sealers[keys[0].key_id]
        self._prefix = keys[0].key_id + "."
        self._macs = {k.key_id: _PrecomputedHmac(k.secret) for k in keys}
        self._ttl_ms = ttl_s * 1000

    def __repr__(self) -> str:  # never the secrets
        return f"TokenSigner(kids={sorted(self._sealers)}, signing={self._sealing.kid!r})"

    def issue(self, token: RequestToken) -> str:
        return self._prefix + _b64(self._sealing.seal(_pad(_encoder.encode(token))))

    def verify(self, request_id: str, *, now_ms: int) -> RequestToken:
        """The token inside ``request_id``; raises ``TokenError`` unless authentic and unexpired."""
        if len(request_id) > MAX_TOKEN_CHARS or not request_id.isascii():
            raise TokenError("malformed request_id")
        parts = request_id.split(".")
        try:
            if len(parts) == 2:
                token = _decoder.decode(_unpad(self._open(parts[0], parts[1])))
            elif len(parts) == 3:
                token = _decoder.decode(_legacy_payload(self._macs, parts[0], parts[1], parts[2]))
            else:
                raise TokenError("malformed request_id")
        except TokenError:
            raise
        except (binascii.Error, msgspec.DecodeError, ValueError):
            # Authentic but undecodable means a format change we do not know: refuse it all the same.
            raise TokenError("request_id payload not understood") from None
        if now_ms - token.issued_ms > self._ttl_ms:
            raise TokenError("request_id expired")
        if token.issued_ms - now_ms > 60_000:
            raise TokenError("request_id issued in the future")
        return token

    def _open(self, kid: str, text: str) -> bytes:
        sealer = self._sealers.get(kid)
        if sealer is None:
            raise TokenError("request_id sealed by an unknown key")
        try:
            sealed = _unb64(text)
            # Only the issued spelling opens: base64 decoding ignores stray characters and the last
            # character's spare bits, so other strings decode to the same bytes, and each would be
            # another request_id (another de-duplication key, another charge) for the same ad.
            if _b64(sealed) != text:
                raise ValueError("not the canonical spelling")
            return sealer.open(sealed)
        except (InvalidTag, binascii.Error, ValueError):
            raise TokenError("request_id signature does not match") from None


def digest(request_id: str) -> str:
    """A short stable id of a request_id for de-duplication keys and event ids (not secret)."""
    return hashlib.blake2b(request_id.encode("ascii", "replace"), digest_size=12).hexdigest()
