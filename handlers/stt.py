"""faster-whisper behind a small interface: audio in, transcript pieces out, lazily.

Models stay loaded for the life of the worker: one instance per model name, loaded on first use.

Whisper always encodes a 30 s window, the audio padded with silence; for a 2 s turn that is 15 times the work
the audio needs. With `window="trimmed"` (the default) the encoder gets the audio and `TRIMMED_PADDING_FRAMES` of
that padding only (CTranslate2 accepts the shorter input). On a 2-core CPU, whisper-base's encoder then takes a
fifth of the time for an 11 s turn, a decode of 2 s of speech drops from about 0.55 s to 0.1 s, and the words on
the shared test speech are the same (`window="full"` restores whisper's window).
"""

import inspect
import os
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ctranslate2
import numpy as np
import structlog
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import Segment, get_ctranslate2_storage, get_suppressed_tokens

from handlers.models import ModelRegistry

log = structlog.get_logger(__name__)
TRIMMED_PADDING_FRAMES = 300  # 3 s: whisper still hears the audio end in silence, so it does not run on
WORDS_PER_SECOND_LIMIT = 8  # a decode of a turn in progress stops here: a repetition loop cannot run long
PROMPT_TOKENS = 32  # of a decode's prompt, the last ones kept: about 25 words (the turn's stable words are 40)
# The batched decode does what `WhisperModel.transcribe` does with its defaults: what it takes as no speech, where
# the first timestamp may be, and which punctuation joins the word beside it. Read from it, not copied.
_TRANSCRIBE_DEFAULTS = {name: p.default for name, p in inspect.signature(WhisperModel.transcribe).parameters.items()}
NO_SPEECH_THRESHOLD: float = _TRANSCRIBE_DEFAULTS["no_speech_threshold"]
LOG_PROB_THRESHOLD: float = _TRANSCRIBE_DEFAULTS["log_prob_threshold"]
MAX_INITIAL_TIMESTAMP_S: float = _TRANSCRIBE_DEFAULTS["max_initial_timestamp"]
PUNCTUATION_BEFORE: str = _TRANSCRIBE_DEFAULTS["prepend_punctuations"]
PUNCTUATION_AFTER: str = _TRANSCRIBE_DEFAULTS["append_punctuations"]

Words = list[tuple[str, float, float]]  # text with its leading space, start and end in seconds of the audio


@dataclass(frozen=True)
class WordsRequest:
    """One decode of a turn in progress: 16 kHz float32 audio, and the session's language and prompt."""

    audio: np.ndarray
    language: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class FileOptions:
    """What a REST request asks of a whole file's decode."""

    task: str = "transcribe"  # or "translate": into English
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None  # None or 0: whisper's fallback from 0 upwards, as OpenAI does
    word_timestamps: bool = False


@dataclass(frozen=True)
class SttOptions:
    device: str = "auto"
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: every core
    beam_size: int = 1
    window: str = "trimmed"  # or "full": whisper's 30 s window
    lanes: int = 1  # decodes that run at the same time (CTranslate2 replicas), sharing the CPU threads


def on_gpu(device: str) -> bool:
    """Whether CTranslate2 runs whisper on a GPU with `device` ("auto" takes one if there is one)."""
    return device == "cuda" or (device == "auto" and ctranslate2.get_cuda_device_count() > 0)


class TrimmedWhisper(WhisperModel):  # type: ignore[misc]  # faster-whisper has no type information
    """Encodes the audio and a little of the padding, not the whole 30 s window (see the module's docstring)."""

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        if features.ndim == 2:  # one window: its padding columns are exactly zero
            content = np.flatnonzero(np.any(features != 0, axis=0))
            end = int(content[-1]) + 1 if len(content) else 0
            frames = -(-(end + TRIMMED_PADDING_FRAMES) // 100) * 100  # whole seconds: few distinct shapes
            features = features[:, : min(frames, features.shape[-1])]
        return super().encode(features)


class Transcriber:
    def __init__(self, registry: ModelRegistry, options: SttOptions = SttOptions()) -> None:
        self._registry = registry
        self._options = options
        self._models: dict[str, WhisperModel] = {}
        self._lock = threading.Lock()

    @property
    def lanes(self) -> int:
        """How many decodes can run at the same time."""
        return self._options.lanes

    def model(self, name: str) -> WhisperModel:
        canonical = self._registry.canonical(name)
        with self._lock:
            if canonical not in self._models:
                path = self._registry.path(canonical)
                log.info("stt.model.loading", model=canonical, path=str(path))
                kind = TrimmedWhisper if self._options.window == "trimmed" else WhisperModel
                self._models[canonical] = kind(
                    str(path),
                    device=self._options.device,
                    compute_type=self._options.compute_type,
                    cpu_threads=max(1, (self._options.cpu_threads or os.cpu_count() or 1) // self._options.lanes),
                    num_workers=self._options.lanes,
                )
            return self._models[canonical]

    def transcribe(
        self, audio: np.ndarray, model: str, language: str | None = None, prompt: str | None = None
    ) -> Iterator[str]:
        """The transcript of 16 kHz float32 `audio` as pieces whose concatenation is the whole transcript."""
        segments, _info = self.model(model).transcribe(
            audio,
            language=language,
            initial_prompt=prompt,
            beam_size=self._options.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        first = True
        for segment in segments:
            text = segment.text.lstrip() if first else segment.text
            if text:
                first = False
                yield text

    def segments(self, audio: np.ndarray, model: str, options: FileOptions) -> tuple[Iterator[Segment], str]:
        """A whole file's segments, lazily, and the language whisper transcribes it in (given, or detected from its
        first 30 s). Whisper's defaults otherwise: conditioned on the text before, its temperature fallback (unless
        a temperature is given), a translation into English with `task="translate"`."""
        segments, info = self.model(model).transcribe(
            audio,
            task=options.task,
            language=options.language,
            initial_prompt=options.prompt,
            beam_size=self._options.beam_size,
            word_timestamps=options.word_timestamps,
            vad_filter=False,
            **({} if not options.temperature else {"temperature": options.temperature}),
        )
        return segments, info.language

    def words(self, requests: Sequence[WordsRequest], model: str) -> list[tuple[Words, str]]:
        """The words of each request's audio and its language (as given, or detected), decoded together: the
        requests whose prompts have the same length in tokens (CTranslate2's whisper needs that) are generated as
        one batch, which on a CPU takes about half the time of generating them one by one.

        A decode of a turn in progress: one greedy pass (the agreement of later decodes catches what a fallback
        would), its length bounded, and its prompt (the session's, then the turn's stable words) cut to its last
        `PROMPT_TOKENS`, so that most decodes of turns in progress can share a batch."""
        whisper = self.model(model)
        features = [whisper.feature_extractor(request.audio) for request in requests]
        content = [f.shape[-1] - 1 for f in features]  # the extractor adds one frame past the audio
        frames = whisper.feature_extractor.nb_max_frames
        if self._options.window == "trimmed":
            frames = min(frames, -(-(max(content) + TRIMMED_PADDING_FRAMES) // 100) * 100)
        batch = np.zeros((len(requests), features[0].shape[0], frames), dtype=np.float32)
        for row, (f, n) in enumerate(zip(features, content, strict=True)):
            batch[row, :, :n] = f[:, :n]
        encoded = self._encode(whisper, batch)
        languages = self._languages(whisper, encoded, requests)
        tokenizers = {
            language: Tokenizer(
                whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language=language
            )
            for language in set(languages)
        }
        previous = [
            tokenizers[language].encode(" " + request.prompt.strip())[-PROMPT_TOKENS:] if request.prompt else []
            for request, language in zip(requests, languages, strict=True)
        ]
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for row, (language, tokens) in enumerate(zip(languages, previous, strict=True)):
            groups[language, len(tokens)].append(row)
        results: list[tuple[Words, str]] = [([], language) for language in languages]
        for (language, _), rows in groups.items():
            decoded = self._generate(
                whisper,
                tokenizers[language],
                encoded[rows],
                [previous[row] for row in rows],
                [content[row] for row in rows],
            )
            for row, words in zip(rows, decoded, strict=True):
                results[row] = (words, language)
        return results

    @staticmethod
    def _encode(whisper: WhisperModel, batch: np.ndarray) -> np.ndarray:
        """The encoder's output for each row of the batch, on the CPU (rows are picked out of it afterwards)."""
        if whisper.model.device == "cuda":  # a GPU encodes a batch in about the time of one row
            return np.asarray(whisper.model.encode(get_ctranslate2_storage(batch), to_cpu=True))
        # A CPU encodes the rows one by one faster than as one batch (bench/stt_batch.py); only generation gains.
        return np.concatenate(
            [
                np.asarray(whisper.model.encode(get_ctranslate2_storage(batch[row : row + 1])))
                for row in range(len(batch))
            ]
        )

    @staticmethod
    def _languages(whisper: WhisperModel, encoded: np.ndarray, requests: Sequence[WordsRequest]) -> list[str]:
        if not whisper.model.is_multilingual:
            return ["en"] * len(requests)
        given = [request.language for request in requests]
        if all(given):
            return [language for language in given if language]
        # per row: (token, probability), the likeliest first
        detected = whisper.model.detect_language(get_ctranslate2_storage(encoded))
        return [request.language or top[0][0][2:-2] for request, top in zip(requests, detected, strict=True)]

    def _generate(
        self,
        whisper: WhisperModel,
        tokenizer: Tokenizer,
        encoded: np.ndarray,
        previous: list[list[int]],
        content: list[int],
    ) -> list[Words]:
        """The words of each row of `encoded` (prompts of one length, one language)."""
        prompts = [whisper.get_prompt(tokenizer, tokens) for tokens in previous]
        limits = [min(200, 16 + round(WORDS_PER_SECOND_LIMIT * n / 100)) for n in content]
        generated = whisper.model.generate(
            get_ctranslate2_storage(encoded),
            prompts,
            beam_size=self._options.beam_size,
            max_length=min(whisper.max_length, len(prompts[0]) + max(limits)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_S / whisper.time_precision),
        )
        results: list[Words] = []
        for row, (result, limit, n) in enumerate(zip(generated, limits, content, strict=True)):
            tokens = result.sequences_ids[0][:limit]
            avg_logprob = result.scores[0] * len(result.sequences_ids[0]) / (len(result.sequences_ids[0]) + 1)
            if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob <= LOG_PROB_THRESHOLD:
                results.append([])
                continue
            segments, _seek, _single_ending = whisper._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=tokens,
                time_offset=0.0,
                segment_size=n,
                segment_duration=n * whisper.feature_extractor.time_per_frame,
                seek=0,
            )
            # Word timings align each row's text with its own encoder output, as a decode on its own would.
            own = get_ctranslate2_storage(np.ascontiguousarray(encoded[row : row + 1]))
            whisper.add_word_timestamps(
                [segments], tokenizer, own, n, PUNCTUATION_BEFORE, PUNCTUATION_AFTER, last_speech_timestamp=0.0
            )
            results.append(
                [
                    (word["word"], word["start"], word["end"])
                    for segment in segments
                    if segment["start"] != segment["end"] and tokenizer.decode(segment["tokens"]).strip()
                    for word in segment.get("words", ())
                ]
            )
        return results
