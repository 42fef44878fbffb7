"""What a conversation session remembers: its items, and the responses in progress."""

from typing import Any, Literal

from msgspec import Struct

from domain import events as ev
from domain import records as rec
from domain.jobs import GenerateJob
from domain.segmentation import Segmenter


class Spoken(Struct, frozen=True):
    """A clause of an assistant's audio: its text and how long it sounds, in session ticks (exact: milliseconds
    summed chunk by chunk would lose up to 1 ms a chunk)."""

    text: str
    ticks: int


class ConvEntry(Struct, frozen=True):
    item: ev.Item
    spoken: tuple[Spoken, ...] = ()  # assistant audio, clause by clause (what truncation cuts)
    audio: ev.AudioRef | None = None  # user audio that arrived inside the item


class Clause(Struct, frozen=True):
    text: str
    ticks: int = 0  # of audio sent so far
    chunks: int = 0  # sent so far: a clause's chunks go out once each, in order, whichever worker made them
    started: bool = False
    done: bool = False


class OutputCall(Struct, frozen=True):
    index: int  # the tool call's index in the LLM stream
    item_id: str
    call_id: str
    name: str
    output_index: int
    arguments: str = ""


class ResponseState(Struct, frozen=True):
    id: str
    conversation: Literal["auto", "none"]
    output_modalities: tuple[Literal["audio", "text"], ...]
    voice: str
    speed: float
    output_format: str
    instructions: str
    tools: tuple[dict[str, Any], ...]
    tool_choice: str | dict[str, Any]
    temperature: float
    max_output_tokens: int | Literal["inf"]
    metadata: dict[str, str] | None = None
    input: tuple[ev.Item, ...] | None = None  # out-of-band input; None: the conversation
    waiting_for: tuple[str, ...] = ()  # user items whose transcript the request needs
    dispatched: bool = False
    attempt: int = 0  # the delivery of the generation job whose pieces the response took (0: none yet)
    message_id: str | None = None
    message_index: int = 0
    text: str = ""  # the message's text (or transcript) so far
    segmenter: Segmenter = Segmenter()
    clauses: tuple[Clause, ...] = ()
    buffered: tuple[rec.SpeechSynthesized, ...] = ()  # chunks of later clauses, waiting for their turn
    calls: tuple[OutputCall, ...] = ()
    outputs: int = 0  # output items so far
    finished: tuple[ev.Item, ...] = ()
    llm_done: bool = False
    finish_reason: str | None = None
    heard_ticks: int | None = None  # the client truncated the message while it was spoken, here
    input_tokens: int = 0
    output_tokens: int = 0
    presynthesized: int = 0  # clauses whose speech was asked for while the response was a speculation


SpeculatedRecord = rec.GenerationDelta | rec.GenerationDone | rec.SpeechSynthesized


class Speculation(Struct, frozen=True):
    """The response a turn in progress would get, started when its closing decode came back while the user was
    still silent (`domain.conversation.speculate`). Its LLM job runs, and its clauses are spoken, but nothing of it
    reaches the client: its records are kept here. If the turn ends with the same request, the response takes them
    over (`response.id` is its id); otherwise its jobs are cancelled and it counts as wasted."""

    item_id: str  # the user item of the turn it answers
    response: ResponseState  # as `create_response` would make it
    job: GenerateJob  # its request
    records: tuple[SpeculatedRecord, ...] = ()  # its results so far, in log order
    attempt: int = 0  # the delivery of its job that the records come from (0: none yet)
    text: bool = False  # some text came
    segmenter: Segmenter = Segmenter()
    clauses: int = 0  # clauses sent to TTS
