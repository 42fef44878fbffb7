"""Deterministic ids: a pure function of the session id and a counter carried in the session state.

Replaying a session's records therefore reproduces every `event_…`, `item_…` id the live session sent.
"""

import hashlib

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_LENGTH = 21  # as long as OpenAI's ids


def derive_id(prefix: str, seed: str, counter: int) -> str:
    digest = hashlib.blake2b(f"{seed}/{counter}".encode(), digest_size=16).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(_ID_LENGTH):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return f"{prefix}_{''.join(chars)}"
