"""Whether the last word heard says that an English sentence goes on.

Semantic VAD hears how a turn sounds (Smart Turn) and, where the turn is transcribed, what was said: a speaker who
stops after "the", "to" or "and", on a filler, or on a comma has not finished, however final their voice sounds.
Only words that almost never end an English sentence are listed: "that", "so" or "before" often do, and a turn
that ends on one of them must not wait.
"""

# articles, possessives and other words that need a noun after them
_BEFORE_A_NOUN = "a an the my your our their its every each either neither"
_PREPOSITIONS = "to of in at for from with into onto by than as"  # those that rarely end a sentence
_CONJUNCTIONS = "and or but nor because although though whether unless"
_BEFORE_A_VERB = "am are were will would could should must might shall be been being"
_HESITATIONS = "um uh er erm uhm"
CONTINUING = frozenset(" ".join((_BEFORE_A_NOUN, _PREPOSITIONS, _CONJUNCTIONS, _BEFORE_A_VERB, _HESITATIONS)).split())
CONTINUING_MARKS = (",", ";", ":", "-", "…", "...")


def goes_on(word: str) -> bool:
    """Whether a sentence whose last word so far is `word` (as whisper writes it) goes on."""
    text = word.strip()
    if text.endswith(CONTINUING_MARKS):
        return True
    return text.strip(".,;:!?\"'()").lower() in CONTINUING
