"""Clause segmentation of a streamed LLM answer for TTS (`domain.segmentation`)."""

# ruff: noqa: RUF001, RUF003  (CJK punctuation is what these tests are about)

import itertools
import re
from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from domain.segmentation import FIRST_CLAUSE_MAX_WORDS, MAX_WORDS, Segmenter, feed, flush


def segment(chunks: Sequence[str]) -> list[str]:
    """Every clause of an answer streamed as `chunks`, flush included."""
    segmenter = Segmenter()
    clauses: list[str] = []
    for chunk in chunks:
        segmenter, cut = feed(segmenter, chunk)
        clauses.extend(cut)
    segmenter, cut = flush(segmenter)
    assert segmenter.pending == ""
    return [*clauses, *cut]


def fed(*chunks: str) -> tuple[Segmenter, tuple[str, ...]]:
    """The segmenter and the clauses after feeding `chunks`, without flushing."""
    segmenter = Segmenter()
    clauses: tuple[str, ...] = ()
    for chunk in chunks:
        segmenter, cut = feed(segmenter, chunk)
        clauses += cut
    return segmenter, clauses


def spoken(text: str) -> str:
    """`text` as TTS should get it: markdown emphasis and line-start heading/bullet markers removed.

    Written from the rules, per line of the whole answer, independently of how the module cuts clauses."""
    lines = [re.sub(r"^\s*(?:#+|[-*])(?=\s|$)", "", line.replace("**", "")) for line in text.split("\n")]
    return "\n".join(lines)


# --- pending until the next character -------------------------------------------------------------------------


def test_a_mark_at_the_end_waits_for_the_next_character() -> None:
    segmenter, clauses = fed("Hello there.")
    assert clauses == ()
    assert segmenter.pending == "Hello there."
    segmenter, clauses = feed(segmenter, " How")
    assert clauses == ("Hello there.",)
    assert segmenter == Segmenter(pending=" How", clauses_cut=1)


def test_a_decimal_split_across_chunks_is_not_cut() -> None:
    assert segment(["It is 3.", "14 exactly. Yes"]) == ["It is 3.14 exactly.", "Yes"]


def test_flush_returns_what_is_pending() -> None:
    segmenter, clauses = fed("Done.")
    assert clauses == ()
    assert flush(segmenter) == (Segmenter(clauses_cut=1), ("Done.",))


@pytest.mark.parametrize("pending", ["", "   ", "\n \n", "**", "\n- ", "\n#"])
def test_flush_of_nothing_speakable_returns_no_clause(pending: str) -> None:
    assert flush(Segmenter(pending=pending, clauses_cut=3)) == (Segmenter(clauses_cut=3), ())


def test_feeding_nothing_changes_nothing() -> None:
    assert feed(Segmenter(), "") == (Segmenter(), ())


# --- where cuts happen ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Pi is about 3.14 and that is it.",
        "We sold 1,000 units by 10:30 in the morning.",
        "Version 2.0.1 is out now.",
        "See example.com for details.",
    ],
)
def test_marks_inside_numbers_and_words_are_not_cut(text: str) -> None:
    assert segment(["Okay. " + text]) == ["Okay.", text]  # after the first clause, which has a length cap


@pytest.mark.parametrize(
    "text",
    [
        "Mr. Smith and Mrs. Jones met Ms. Lee.",
        "Dr. Who and Prof. Oak came.",
        "Sammy Davis Sr. and Jr. live on Main St. today.",
        "It was cats vs. dogs again.",
        "Bring fruit e.g. apples or i.e. something sweet.",
        "Apples, pears etc. are fine.",
        "DR. SMITH and E.G. this and Etc. too.",
    ],
)
def test_abbreviations_are_not_sentence_ends(text: str) -> None:
    assert segment(["Okay. " + text]) == ["Okay.", text]


def test_initials_are_not_sentence_ends() -> None:
    assert segment(["J. R. R. Tolkien wrote it. Then"]) == ["J. R. R. Tolkien wrote it.", "Then"]
    assert segment(["The U.S. Army came. Then"]) == ["The U.S. Army came.", "Then"]


def test_the_pronoun_i_ends_a_sentence() -> None:
    assert segment(["So did I. Then we left."]) == ["So did I.", "Then we left."]


def test_sentence_ends() -> None:
    assert segment(["Hi! Really? Yes. Well… maybe."]) == ["Hi!", "Really?", "Yes.", "Well…", "maybe."]


def test_a_run_of_marks_and_closing_quotes_is_cut_after_the_last() -> None:
    assert segment(['He said "stop." Then he left?! Why (really)?']) == [
        'He said "stop."',
        "Then he left?!",
        "Why (really)?",
    ]
    assert segment(["Wait... what"]) == ["Wait...", "what"]


def test_cjk_marks_cut_without_a_following_space() -> None:
    assert segment(["你好，世界。今天天气很好，我们去公园散步吧！走？"]) == [
        "你好，",
        "世界。",
        "今天天气很好，",
        "我们去公园散步吧！",
        "走？",
    ]


def test_cjk_clause_marks_need_the_minimum_too() -> None:
    # One ideograph is one word: "好，" is too short to open the answer, "天气好，" too short later on.
    assert segment(["好，谢谢。天气好，走吧。"]) == ["好，谢谢。", "天气好，走吧。"]
    assert segment(["そうですね、いい天気です。"]) == ["そうですね、", "いい天気です。"]


def test_a_cjk_mark_at_the_end_waits_for_the_next_character() -> None:
    segmenter, clauses = fed("你好。")
    assert clauses == ()
    assert feed(segmenter, "我")[1] == ("你好。",)


def test_newlines_cut_at_once() -> None:
    assert fed("Title\n")[1] == ("Title",)
    assert segment(["First line\nsecond line\n\n\nthird"]) == ["First line", "second line", "third"]


def test_newlines_cut_later_clauses_of_any_length() -> None:
    assert segment(["Hello there.\nA\nB\n"]) == ["Hello there.", "A", "B"]


# --- clause lengths -------------------------------------------------------------------------------------------


def test_the_first_clause_is_cut_at_a_comma_after_two_words() -> None:
    assert fed("Sure, ")[1] == ()
    assert fed("Sure, I can help, with that")[1] == ("Sure, I can help,",)
    assert segment(["Okay so, here"]) == ["Okay so,", "here"]


def test_the_first_clause_is_cut_at_a_sentence_end_after_one_word() -> None:
    assert segment(["Hi! There"]) == ["Hi!", "There"]


def test_punctuation_alone_is_not_a_clause() -> None:
    assert segment(["... Okay. ! Right"]) == ["... Okay.", "! Right"]


def test_later_clauses_take_a_comma_only_after_six_words() -> None:
    text = "Yes. One two, three four five six, seven eight; nine ten eleven twelve thirteen fourteen: end."
    assert segment([text]) == [
        "Yes.",
        "One two, three four five six,",
        "seven eight; nine ten eleven twelve thirteen fourteen:",
        "end.",
    ]


def test_later_clauses_are_cut_at_any_sentence_end() -> None:
    assert segment(["Right. Ok. Go! Now"]) == ["Right.", "Ok.", "Go!", "Now"]


def test_a_long_run_without_marks_is_cut_at_the_last_space() -> None:
    words = [f"w{index}" for index in range(100)]
    expected = ["Okay.", " ".join(words[:40]), " ".join(words[40:80]), " ".join(words[80:])]
    assert MAX_WORDS == 40
    assert segment(["Okay. " + " ".join(words)]) == expected
    assert segment(["Okay. ", *(f"{word} " for word in words)]) == expected


def test_a_long_run_is_cut_before_the_next_word_arrives_in_full() -> None:
    segmenter, clauses = fed("Okay. " + " ".join(["word"] * 40) + " ")
    assert clauses == ("Okay.",)  # a 41st word may not follow
    segmenter, clauses = feed(segmenter, "n")
    assert clauses == (" ".join(["word"] * 40),)
    assert segmenter.pending == "n"


def test_a_long_cjk_run_is_cut_after_forty_ideographs() -> None:
    assert segment(["好。" + "字" * 90]) == ["好。", "字" * 40, "字" * 40, "字" * 10]


def test_the_first_clause_ends_after_six_words_even_without_a_mark() -> None:
    answer = "This quote is a famous part of the American Declaration of Independence, yes."
    assert FIRST_CLAUSE_MAX_WORDS == 6
    assert segment([answer]) == ["This quote is a famous part", "of the American Declaration of Independence,", "yes."]
    assert segment(list(answer)) == segment([answer]), "whatever the chunking"


def test_the_first_clause_ends_before_a_word_that_opens_a_phrase_from_the_fourth_word_on() -> None:
    answer = "That is a powerful quote from John F. Kennedy's inaugural address."
    assert segment([answer]) == ["That is a powerful quote", "from John F. Kennedy's inaugural address."]
    assert segment(list(answer)) == segment([answer]), "whatever the chunking"
    # Not before the fourth word, nor after a word that needs what follows, nor later clauses.
    assert segment(["I went to Paris and it rained there, a lot."]) == [
        "I went to Paris",
        "and it rained there, a lot.",
    ]
    assert segment(["Sure, I can help with that."]) == ["Sure, I can help", "with that."]
    assert segment(["It is in the middle of the night."]) == ["It is in the middle", "of the night."]
    assert segment(["I can do that for you."]) == ["I can do that for you."], "'that' needs what follows"
    assert segment(["One two three fromage four five six"])[0] == "One two three fromage four five", "whole words"


# --- markdown -------------------------------------------------------------------------------------------------


def test_markdown_markers_are_removed_and_the_words_kept() -> None:
    text = "## Heading\n- **First** item.\n* Second item\n  - nested **bold**\nSome **bold** text - with a dash.\n"
    assert segment([text]) == ["Heading", "First item.", "Second item", "nested bold", "Some bold text - with a dash."]


def test_markers_at_the_start_of_the_answer_are_removed() -> None:
    assert segment(["# Title here"]) == ["Title here"]
    assert segment(["**Note:** read this."]) == ["Note: read this."]


def test_marker_lookalikes_stay() -> None:
    assert segment(["#hashtag and -5 degrees\n---\n"]) == ["#hashtag and -5 degrees", "---"]
    assert segment(["Yes. - not a bullet. * not one either"]) == ["Yes.", "- not a bullet.", "* not one either"]


def test_a_line_of_markers_only_gives_no_clause() -> None:
    segmenter, clauses = fed("Hello there.\n**\n#\n- ")
    assert clauses == ("Hello there.",)
    assert segmenter.clauses_cut == 1


def test_emphasis_around_a_sentence_stays_with_it() -> None:
    assert segment(["**Why?** Because it works."]) == ["Why?", "Because it works."]


# --- properties -----------------------------------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None)

# Western tokens that hit every rule; the words property needs text where cuts can only fall at whitespace.
WESTERN_TOKENS = [
    *["Hello", "world", "I", "J", "U", "S", "it", "a", "Tolkien", "3", "14", "1,000", "10:30", "the"],
    *["Dr", "Mrs", "e.g", "i.e", "etc", "vs", "St"],
    *[".", ",", ";", ":", "!", "?", "…", "...", '"', "'", ")", "(", "”"],
    *[" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n "],
    *["- ", "* ", "**", "#", "## ", "-", "*", "_"],
]
CJK_TOKENS = ["你好", "世界", "字", "。", "，", "、", "！", "？", "：", "；", "」", "「", "ですね"]

western_text = st.lists(st.sampled_from(WESTERN_TOKENS), max_size=120).map("".join)
any_text = st.one_of(
    western_text,
    st.lists(st.sampled_from(WESTERN_TOKENS + CJK_TOKENS), max_size=120).map("".join),
    st.text(max_size=200),
    st.text(alphabet=st.sampled_from("ab .,!?\n*#-字。，"), max_size=300),
)


@st.composite
def chunked(draw: st.DrawFn, text_strategy: st.SearchStrategy[str]) -> tuple[str, list[str]]:
    """Some text and the same text split into random chunks (empty ones included)."""
    text = draw(text_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=20)))
    bounds = [0, *cuts, len(text)]
    return text, [text[start:end] for start, end in itertools.pairwise(bounds)]


@SETTINGS
@given(chunked(western_text))
@example(("Yes. - no\n- ok", ["Yes. - no\n- ok"]))  # a dash after a mid-line cut is not a bullet
def test_every_word_is_kept_in_order(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    assert " ".join(segment(chunks)).split() == spoken(text).split()


@SETTINGS
@given(chunked(any_text))
def test_every_character_is_kept_in_order(case: tuple[str, list[str]]) -> None:
    # CJK marks cut between characters with no space, so words can split: characters are what is kept.
    text, chunks = case
    assert "".join("".join(segment(chunks)).split()) == "".join(spoken(text).split())


@SETTINGS
@given(chunked(any_text))
def test_the_chunking_does_not_change_the_clauses(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    assert segment(chunks) == segment([text])
    assert segment(chunks) == segment(list(text))


@SETTINGS
@given(chunked(any_text))
def test_clauses_are_stripped_and_not_empty(case: tuple[str, list[str]]) -> None:
    _, chunks = case
    for clause in segment(chunks):
        assert clause
        assert clause == clause.strip()


@SETTINGS
@given(chunked(st.lists(st.sampled_from(["word", "x", " ", "  ", "\t"]), max_size=400).map("".join)))
def test_no_clause_is_longer_than_the_maximum(case: tuple[str, list[str]]) -> None:
    _, chunks = case
    assert all(len(clause.split()) <= MAX_WORDS for clause in segment(chunks))


@SETTINGS
@given(chunked(any_text))
def test_clauses_cut_counts_the_clauses(case: tuple[str, list[str]]) -> None:
    _, chunks = case
    segmenter = Segmenter()
    count = 0
    for chunk in chunks:
        segmenter, clauses = feed(segmenter, chunk)
        count += len(clauses)
        assert segmenter.clauses_cut == count
    segmenter, clauses = flush(segmenter)
    assert segmenter == Segmenter(clauses_cut=count + len(clauses))
