"""Shopper tokens: a store's back end vouches that this browser is this shopper, for a while.

A token is ``<expiry>.<signature>``: the expiry in Unix seconds, and HMAC-SHA256 over
``"shopper-token|v1|<user_id>|<expiry>"`` with ``SHELFSIGHT_SHOPPER_TOKEN_SECRET``, base64url
without padding. The user id is not inside the token: the request names it, and the signature
only matches for that id. Minting needs nothing from Shelfsight — five lines in any language:

>>> import base64, hashlib, hmac
>>> def mint_shopper_token(secret: bytes, user_id: str, expires: int) -> str:
...     message = f"shopper-token|v1|{user_id}|{expires}".encode()
...     signature = hmac.new(secret, message, hashlib.sha256).digest()
...     return f"{expires}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
>>> token = mint_shopper_token(b"s3cret", "u-42", 2_000_000_000)
>>> token == mint(b"s3cret", "u-42", 2_000_000_000)
True
>>> verify(b"s3cret", "u-42", token, now=1_999_999_000, max_ttl_s=3600)
>>> print(verify(b"s3cret", "u-43", token, now=1_999_999_000, max_ttl_s=3600))
the shopper token is for another shopper, or not signed with the API's secret
"""

import base64
import hashlib
import hmac
import re

_EXPIRY = re.compile(r"([0-9]{1,12})\.", re.ASCII)


def mint(secret: bytes, user_id: str, expires: int) -> str:
    message = f"shopper-token|v1|{user_id}|{expires}".encode()
    signature = hmac.new(secret, message, hashlib.sha256).digest()
    return f"{expires}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def expiry(token: str) -> int | None:
    """The Unix time ``token`` says it expires at; None when that part is not 1 to 12 ASCII digits.

    ``str.isdigit`` would let "²" or "١" through (and ``int("²")`` raises), so the digits are matched.

    >>> expiry("1700000000.abc"), expiry("².x"), expiry("١٢.x"), expiry("")
    (1700000000, None, None, None)
    """
    match = _EXPIRY.match(token)
    return int(match.group(1)) if match else None


def verify(secret: bytes, user_id: str, token: str | None, now: float, max_ttl_s: float) -> str | None:
    """None when ``token`` lets its bearer act as ``user_id`` now; else why not (one line)."""
    if not token:
        return "a shopper token is required (X-Shopper-Token header, or ?token= on the stream)"
    expires = expiry(token)
    if expires is None:
        return "malformed shopper token"
    if expires <= now:
        return "the shopper token has expired: ask the store for a new one"
    if expires > now + max_ttl_s:
        return f"the shopper token lives longer than SHELFSIGHT_SHOPPER_TOKEN_MAX_TTL_S ({max_ttl_s:.0f} s)"
    if not hmac.compare_digest(token.encode(), mint(secret, user_id, expires).encode()):
        return "the shopper token is for another shopper, or not signed with the API's secret"
    return None
