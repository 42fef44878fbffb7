"""Cutting an LLM's streamed answer into clauses for text-to-speech.

Each clause is synthesised as soon as it is complete, while the LLM is still generating. The first clause is
cut early (two words before a comma are enough; from the fourth word on, a word that opens a phrase, such as
"from" or "because", starts the next clause unless the word before it needs what follows, such as "a" or "is"; and
six words end it even without either) so the first audio comes quickly; later clauses run on to at least six
words before a comma is taken, for natural prosody.
Sentence ends and newlines always cut, and a later run without punctuation is cut after `MAX_WORDS` words so
synthesis never waits on an unbounded clause.

A cut is decided only from text already received, so an answer gives the same clauses however it is chunked.
"""

import re

import msgspec

SENTENCE_MARKS = frozenset(".!?…。！？")  # noqa: RUF001 (full-width marks on purpose)
CLAUSE_MARKS = frozenset(",;:、，；：")  # noqa: RUF001 (full-width marks on purpose)
MARKS = SENTENCE_MARKS | CLAUSE_MARKS
# CJK text has no spaces between sentences: these cut whatever follows them.
CJK_MARKS = frozenset("。！？、，；：")  # noqa: RUF001 (full-width marks on purpose)
# Closing quotes, brackets and emphasis stay with the mark they follow: `"Stop." Then` is cut after the quote.
CLOSERS = frozenset("\"'”’)]}»」』）*_")  # noqa: RUF001 (full-width marks on purpose)
ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e")
FIRST_CLAUSE_MIN_WORDS = 2
# Without punctuation, the first clause still ends after this many words: its audio is what the user waits for.
FIRST_CLAUSE_MAX_WORDS = 6
# After this many words, the first clause also ends before a word that opens a phrase (a preposition, a
# conjunction, a relative pronoun; not words that may as well end one, such as "that", "so" or "before"), unless
# the word before is one that cannot end a phrase: a natural place to pause that comes sooner than the cap.
FIRST_CLAUSE_BREAK_WORDS = 3
_OPENERS = (
    "about although and at because but by during for from if in into of on or through to unless until when where "
    "whereas which while who whom whose with within without"
)
_NO_END = (
    "a an the my your his her its our their this these those some any each every no of to in on at by for with "
    "from into about as than and or but nor so if that which who is are was were am be been being will would can "
    "could should shall may might must do does did has have had not very"
)
PHRASE_OPENERS = frozenset(_OPENERS.split())
NO_PHRASE_END = frozenset(_NO_END.split())
CLAUSE_MIN_WORDS = 6
MAX_WORDS = 40

# Kana and CJK ideographs: each one counts as a word, as text in these scripts has no spaces to count by.
_IDEOGRAPH_RANGES = (("\u3040", "\u30ff"), ("\u3400", "\u4dbf"), ("\u4e00", "\u9fff"), ("\uf900", "\ufaff"))
_LONGEST_ABBREVIATION = max(len(abbreviation) for abbreviation in ABBREVIATIONS)
# A heading or bullet marker at the start of a line (after "**" is removed); the words after it stay.
_WORD = re.compile(r"\w+")
_LINE_MARKER = re.compile(r"\A(?:#+|[-*])(?=\s|\Z)")


class Segmenter(msgspec.Struct, frozen=True):
    pending: str = ""  # text received but not yet cut into a clause
    clauses_cut: int = 0  # how many clauses were already produced


def feed(segmenter: Segmenter, text: str) -> tuple[Segmenter, tuple[str, ...]]:
    """Add streamed text; return the clauses now complete (in order) and the new segmenter."""
    pending, clauses_cut = segmenter.pending + text, segmenter.clauses_cut
    clauses: list[str] = []
    while (cut := _next_cut(pending, first=clauses_cut == 0)) is not None:
        clause = _clean(pending[:cut], clauses_cut)
        pending = pending[cut:]
        if clause:
            clauses.append(clause)
            clauses_cut += 1
    return Segmenter(pending, clauses_cut), tuple(clauses)


def flush(segmenter: Segmenter) -> tuple[Segmenter, tuple[str, ...]]:
    """The LLM finished: whatever is pending (stripped, if not empty) becomes the last clause."""
    clause = _clean(segmenter.pending, segmenter.clauses_cut)
    if not clause:
        return Segmenter(clauses_cut=segmenter.clauses_cut), ()
    return Segmenter(clauses_cut=segmenter.clauses_cut + 1), (clause,)


def _next_cut(text: str, first: bool) -> int | None:
    """Where the clause that `text` starts with ends, or None while that is not decided yet.

    Newlines cut before themselves, so a clause starts either at the start of the answer or of a line, or
    somewhere inside a line (after a mark or a long run): `_clean` relies on that to find line-start markers."""
    limit = FIRST_CLAUSE_MAX_WORDS if first else MAX_WORDS
    words = 0
    run_start: int | None = None  # where the current run of non-space, non-ideograph characters started
    run_counted = False  # runs of bare symbols ("-", "**", "...") are not words
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\n":
            if index > 0:
                return index
            run_start = None
        elif char.isspace():
            run_start = None
        elif _is_ideograph(char):
            if words >= limit:
                return index
            words += 1
            run_start = None
        else:
            if run_start is None:
                run_start, run_counted = index, False
            if char.isalnum() and not run_counted:
                if words >= limit:
                    return run_start
                if first and words >= FIRST_CLAUSE_BREAK_WORDS:
                    opens = _opens_phrase(text, run_start)
                    if opens is None:
                        return None  # the word may not be complete yet
                    if opens:
                        return run_start
                words += 1
                run_counted = True
            if char in MARKS:
                end = index + 1
                while end < len(text) and (text[end] in MARKS or text[end] in CLOSERS):
                    end += 1
                if end == len(text):
                    return None  # the character after the marks decides
                if _is_cut(text, index, end, words, first):
                    return end
                index = end
                continue
        index += 1
    return None


def _is_cut(text: str, start: int, end: int, words: int, first: bool) -> bool:
    """Whether the marks (and closers) in `text[start:end]`, after a clause of `words` words, end it."""
    marks = [char for char in text[start:end] if char in MARKS]
    if marks[0] == "." and _ends_with_abbreviation(text[:start]):
        marks = marks[1:]
    # A clause of bare punctuation would be silent: it waits for words.
    if not marks or words == 0:
        return False
    # "3.14", "e.g.", "1,000" and "10:30" are not cut: the mark must be followed by a space (CJK marks excepted).
    if not text[end].isspace() and not any(mark in CJK_MARKS for mark in marks):
        return False
    if any(mark in SENTENCE_MARKS for mark in marks):
        return True
    return words >= (FIRST_CLAUSE_MIN_WORDS if first else CLAUSE_MIN_WORDS)


def _opens_phrase(text: str, start: int) -> bool | None:
    """Whether the word at `start` opens a phrase the clause before it can end at; None while the word may go on."""
    word = _WORD.match(text, start)
    if word is None or word.end() == len(text):
        return None
    before = text[:start].split()
    previous = before[-1].strip("\"'()[]*_").lower() if before else ""
    return word.group().lower() in PHRASE_OPENERS and previous not in NO_PHRASE_END


def _ends_with_abbreviation(before: str) -> bool:
    """Whether a "." after `before` closes an abbreviation or an initial rather than a sentence."""
    tail = before[-_LONGEST_ABBREVIATION - 1 :]
    previous = tail[-2:-1]
    if tail[-1:].isupper() and not previous.isalpha():
        # A lone capital is an initial ("J. R. R. Tolkien"), but "I" alone is the pronoun ("So did I.").
        return tail[-1] != "I" or previous == "."
    tail = tail.lower()
    for abbreviation in ABBREVIATIONS:
        if tail.endswith(abbreviation):
            preceding = tail[: -len(abbreviation)][-1:]
            if not preceding.isalpha() and preceding != ".":
                return True
    return False


def _clean(clause: str, clauses_cut: int) -> str:
    """The clause as TTS should read it: stripped, without markdown emphasis and line-start markers."""
    # Newlines cut before themselves: a clause starts a line when none came before it or it starts with "\n".
    at_line_start = clauses_cut == 0 or clause.startswith("\n")
    text = clause.replace("**", "").strip()
    if at_line_start:
        text = _LINE_MARKER.sub("", text, count=1).strip()
    return text


def _is_ideograph(char: str) -> bool:
    return any(low <= char <= high for low, high in _IDEOGRAPH_RANGES)
