"""Stable words from consecutive decodes: what agrees, and what a decode repeats or makes up."""

from domain.agreement import agreed, normalized, text_of, unheard
from domain.records import Word


def said(*spans: tuple[str, float, float]) -> tuple[Word, ...]:
    """Words as whisper gives them, times in seconds."""
    return tuple(Word(text=f" {text}", start=round(s * 16_000), end=round(e * 16_000)) for text, s, e in spans)


def test_case_and_punctuation_do_not_count():
    assert normalized(" Americans,") == normalized("americans") == "americans"
    assert normalized(" don't") == "don't"
    assert normalized(" ...") == ""


def test_two_decodes_agree_on_their_common_first_words():
    before = said(("And", 0.0, 0.5), ("so", 0.5, 0.9), ("my", 0.9, 1.2), ("fellow", 1.2, 1.5))
    now = said(("and", 0.0, 0.5), ("so", 0.5, 0.9), ("my", 0.9, 1.2), ("Fellow", 1.2, 1.6), ("Americans", 1.6, 2.1))
    assert agreed(before, now) == 4
    assert agreed(before, said(("And", 0.0, 0.5), ("saw", 0.5, 0.9))) == 1
    assert agreed((), now) == 0


def test_words_before_the_stable_end_are_already_said():
    words = said(("do", 9.3, 9.5), ("for", 9.5, 9.8), ("your", 9.8, 9.95), ("country", 9.95, 10.2))
    # The stable text ends at 9.8 s: "do" and "for" are in it; a word starting within 100 ms before still counts.
    assert text_of(unheard(words, round(9.8 * 16_000), ())) == " your country"
    assert text_of(unheard(words, round(9.88 * 16_000), ())) == " your country"


def test_a_repeat_of_the_last_stable_words_is_dropped():
    tail = said(("can", 9.0, 9.3), ("do", 9.3, 9.5))
    # Word times drifted: the decode says "can do" again after the stable end, then goes on.
    words = said(("can", 9.5, 9.7), ("do", 9.7, 9.9), ("for", 9.9, 10.1))
    assert text_of(unheard(words, round(9.5 * 16_000), tail)) == " for"
    # Far from the stable end, the same words are new speech.
    later = said(("can", 12.0, 12.2), ("do", 12.2, 12.4))
    assert text_of(unheard(later, round(9.5 * 16_000), tail)) == " can do"


def test_words_without_duration_or_letters_are_made_up():
    words = said(("country.", 9.9, 10.2), ("For", 10.2, 10.2), ("your", 10.2, 10.2), ("...", 10.2, 10.4))
    assert text_of(unheard(words, 0, ())) == " country."
