"""The model-facing handlers on their own: audio input, silero VAD, the model registry."""

import hashlib
import re
import shutil
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from handlers import models
from handlers.input_audio.decode import InputAudio, InvalidAudio, g711_to_pcm16
from handlers.input_audio.vad import SileroVad
from handlers.models import ChecksumMismatch, ModelRegistry, UnknownModel
from tests.conftest import MODEL_CACHE
from tests.realtime_client import AUDIO

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 codec of the standard library (until Python 3.13)


def _jfk() -> bytes:
    with wave.open(str(AUDIO / "jfk.wav")) as wav:
        return wav.readframes(wav.getnframes())


@pytest.mark.parametrize(
    ("audio_format", "reference"), [("g711_ulaw", audioop.ulaw2lin), ("g711_alaw", audioop.alaw2lin)]
)
def test_g711_decoding_matches_the_standard(audio_format, reference):
    codes = bytes(range(256))
    expected = np.frombuffer(reference(codes, 2), dtype="<i2")
    assert np.array_equal(g711_to_pcm16(codes, audio_format), expected)


def test_streaming_resampler_has_no_chunk_seams():
    pcm = _jfk()[: 24000 * 2 * 3]
    whole = soxr.resample(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768, 24000, 16000, quality="HQ")
    streamed = InputAudio("pcm16")
    pieces = [streamed.decode(pcm[i : i + 2 * 357], max_seconds=5) for i in range(0, len(pcm), 2 * 357)]
    ticks = sum(t for piece in pieces for t, _ in piece)
    samples = np.concatenate([s for piece in pieces for _, s in piece])
    assert ticks == len(pcm) // 2 * 2  # 24 kHz: two ticks of 1/48000 s per sample
    n = min(len(samples), len(whole))
    assert n > 47_000
    assert np.max(np.abs(samples[:n] - whole[:n])) < 1e-3


def test_odd_pcm16_is_refused_before_anything_is_decoded():
    with pytest.raises(InvalidAudio):
        InputAudio("pcm16").decode(b"\x00\x01\x02", max_seconds=5)


def test_long_appends_are_split():
    pieces = InputAudio("pcm16").decode(bytes(24000 * 2 * 12), max_seconds=5)
    assert [t // 48000 for t, _ in pieces] == [5, 5, 2]


def test_vad_scores_speech_and_silence_the_same_whatever_the_chunking():
    vad = SileroVad()
    audio = soxr.resample(np.frombuffer(_jfk(), dtype="<i2").astype(np.float32) / 32768, 24000, 16000)
    whole = vad.stream().feed(audio)
    stream = vad.stream()
    chunked = [p for i in range(0, len(audio), 1000) for p in stream.feed(audio[i : i + 1000])]
    assert len(whole) == len(audio) // 512 == len(chunked)
    assert np.allclose(whole, chunked, atol=1e-3)
    assert max(whole) > 0.9 and sum(p > 0.5 for p in whole) > len(whole) / 2
    assert max(vad.stream().feed(np.zeros(16000, dtype=np.float32))) < 0.1


def test_openai_names_are_aliases_and_unknown_names_list_the_installed(tmp_path):
    registry = ModelRegistry(cache_dir=tmp_path, default="whisper-base")
    for name in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-latest", None, ""):
        assert registry.canonical(name) == "whisper-base"
    assert registry.canonical("whisper-tiny.en") == "whisper-tiny.en"
    with pytest.raises(UnknownModel, match=re.escape("whisper-base, whisper-tiny.en")):
        registry.canonical("whisper-large-v3")
    with pytest.raises(UnknownModel):
        registry.canonical("someone/not-in-the-cache")


def test_local_directory_and_hugging_face_cache(tmp_path):
    tiny = MODEL_CACHE / "whisper-tiny.en"
    local = tmp_path / "local-model"
    shutil.copytree(tiny, local)
    registry = ModelRegistry(cache_dir=MODEL_CACHE, hf_cache_dir=tmp_path / "hub")
    assert registry.canonical(str(local)) == str(local) and registry.path(str(local)) == local
    # A Hugging Face cache entry, laid out as huggingface_hub lays it out.
    repo = tmp_path / "hub" / "models--someone--tiny"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    assert registry.canonical("someone/tiny") == "someone/tiny"
    assert registry.path("someone/tiny") == snapshot


def test_assembly_checks_the_checksum(tmp_path, monkeypatch):
    good = models.BUNDLED["whisper-tiny.en"]
    bad = models.Bundled(
        name="whisper-tiny.en", sha256="0" * 64, parts=good.parts, side_files_from=good.side_files_from
    )
    monkeypatch.setitem(models.BUNDLED, "whisper-tiny.en", bad)
    with pytest.raises(ChecksumMismatch):
        ModelRegistry(cache_dir=tmp_path).prepare("whisper-tiny.en")
    assert not list((tmp_path / "whisper-tiny.en").glob("model.bin*")), "nothing half-checked is left behind"


def test_prepared_model_is_the_bundled_one(tmp_path):
    target = ModelRegistry(cache_dir=tmp_path).prepare("whisper-tiny.en")
    digest = hashlib.sha256((target / "model.bin").read_bytes()).hexdigest()
    assert digest == models.BUNDLED["whisper-tiny.en"].sha256
    assert {p.name for p in target.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert isinstance(target, Path)
