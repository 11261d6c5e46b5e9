"""JSON in and out of the service with orjson, reading exactly what the standard library reads.

:func:`loads` decodes a body with orjson (a few times faster than :mod:`json`) and falls back to
``json.loads`` where the two could differ: bodies orjson refuses (``NaN``, ``1e400``, lone
surrogates, other encodings -- ``json`` then reads them, or raises the error the service has
always answered with) and bodies with a run of 19 or more digits (integers beyond 64 bits, which
orjson reads as floats). It says which decoder read the body: only orjson's values have a
faithful :func:`content_key`, so only they may use the parse cache. :func:`dumps` encodes an answer
(compact; a NaN, which a valid answer never holds, would become ``null`` rather than invalid JSON).

Examples
--------
>>> loads(b'{"a": [1, 2.5]}'), loads(b'{"a": NaN}')[1]
(({'a': [1, 2.5]}, True), False)
>>> content_key({"b": 1, "a": 2}) == content_key({"a": 2, "b": 1}) != content_key({"a": 2.0, "b": 1})
True
>>> dumps({"risk": 0.25, "items": [None, True]})
b'{"risk":0.25,"items":[null,true]}'
"""

from __future__ import annotations

import hashlib
import json

import orjson

__all__ = ["loads", "dumps", "content_key"]

_DIGIT = bytes(49 if 48 <= c <= 57 else 48 for c in range(256))  # digits -> "1", the rest -> "0"
_LONG_NUMBER = b"1" * 19


def loads(body: bytes):
    """``(value, by_orjson)``: the decoded body, as ``json.loads`` reads it (its errors too)."""
    if _LONG_NUMBER not in body.translate(_DIGIT):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(body), False


def dumps(value) -> bytes:
    """Compact JSON bytes of an answer."""
    return orjson.dumps(value)


def content_key(value) -> bytes:
    """A 16-byte digest of a JSON value decoded by orjson (object keys in any order give one key)."""
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
