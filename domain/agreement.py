"""Which words of a growing turn's decodes are stable: local agreement between consecutive decodes.

Whisper decodes the turn again as it grows. A word is stable once two consecutive decodes agree on it and on
everything before it; stable words are sent and never revised. The next decode starts where the stable words
end, so a decode can repeat the end of the stable text (whisper's word times are approximate): `unheard` drops
what was already said, by time and by a repeat of the last stable words, and the words whisper made up.
"""

import re
from collections.abc import Sequence

from domain.audio_time import samples_from_ms
from domain.records import Word

# Whisper's word boundaries are good to about 100 ms: a word starting that much before the stable text ends is
# still a new word.
TIME_TOLERANCE = samples_from_ms(100)
MAX_REPEAT = 5  # the longest repeat of the stable text's last words that a decode's start is checked for
_NOT_WORD = re.compile(r"[^\w']+")


def normalized(text: str) -> str:
    """A word as compared: case and punctuation do not count ("Americans," agrees with "americans")."""
    return _NOT_WORD.sub("", text.lower())


def unheard(words: Sequence[Word], stable_end: int, stable_tail: Sequence[Word]) -> tuple[Word, ...]:
    """The words of a decode that are not already stable: those that start after the stable text ends, less a
    repeat of its last words (`stable_tail`) where the decode begins right after it."""
    fresh = [w for w in words if w.start >= stable_end - TIME_TOLERANCE and _heard(w)]
    if fresh and fresh[0].start - stable_end < samples_from_ms(1000):
        for n in range(min(MAX_REPEAT, len(stable_tail), len(fresh)), 0, -1):
            if [normalized(w.text) for w in fresh[:n]] == [normalized(w.text) for w in stable_tail[-n:]]:
                return tuple(fresh[n:])
    return tuple(fresh)


def _heard(word: Word) -> bool:
    """Whisper gives words it did not hear in the audio (a repetition running on at the end of a window, text
    that is all punctuation) no duration, or no letters."""
    return word.end > word.start and bool(normalized(word.text))


def agreed(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """How many leading words two consecutive decodes agree on."""
    count = 0
    for before, now in zip(previous, current, strict=False):
        if normalized(before.text) != normalized(now.text):
            break
        count += 1
    return count


def text_of(words: Sequence[Word]) -> str:
    """Whisper's words carry their leading space, so the text is their concatenation."""
    return "".join(w.text for w in words)
