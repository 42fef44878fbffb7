"""Settings: every one has an environment variable `VOCALIS_<NAME>` (documented in the README)."""

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vocalis"


WORKER_KINDS = ("stt", "llm", "tts", "analytics")


class SettingsError(ValueError):
    """A setting that cannot be used, said in one line that names its variable."""


# Settings with a fixed set of values.
CHOICES = {
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("auto", "json", "console"),
    "stt_device": ("auto", "cpu", "cuda"),
    "stt_window": ("trimmed", "full"),
    "tts_device": ("auto", "cpu", "cuda"),
}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=_default_data_dir)
    nats_url: str | None = None  # unset: start an embedded nats-server
    nats_port: int = 4222  # the embedded server's client port; 0 picks a free one
    subject_prefix: str = "vocalis"
    api_key: str | None = None
    model_dir: Path | None = None  # default: one directory for every data dir (models are large; never copied)
    stt_model: str = "whisper-base"
    stt_device: str = "auto"
    stt_compute_type: str = "int8"  # CTranslate2 compute type; float16 or int8_float16 suit a GPU
    stt_cpu_threads: int = 0
    stt_beam_size: int = 1
    stt_window: str = "trimmed"  # whisper encodes the audio and 3 s of padding; "full": its whole 30 s window
    stt_batch: int = 0  # decodes of turns in progress run together, up to this many; 0: 16 on a GPU, 1 on a CPU
    stt_lanes: int = 0  # decodes one STT worker runs at the same time, each on its share of the CPU threads; 0: 2 on a
    # CPU (one kept for transcripts that fall due), 1 on a GPU
    llm_base_url: str | None = None  # an OpenAI-compatible endpoint; unset: the bundled model, in process
    llm_api_key: str | None = None
    llm_model: str = "qwen2.5-coder-1.5b"  # a bundled model, or the endpoint's model name
    llm_context: int = 4096  # the LLM's context window in tokens (the bundled model's; set an endpoint's own)
    llm_at_once: int = 4  # answers an LLM worker streams together from an endpoint (the bundled model: one)
    llm_threads: int = 0  # threads for the bundled model; 0: every core
    llm_gpu_layers: int = 0  # layers of the bundled model on the GPU (llama.cpp built with CUDA); 0: CPU only
    tts_device: str = "cpu"  # Kokoro on "cpu", "cuda" (onnxruntime-gpu, the [gpu] extra) or "auto"
    tls_certfile: Path | None = None  # serve https/wss (the JavaScript SDK always dials wss://)
    tls_keyfile: Path | None = None
    max_session_s: int = 3600
    max_sessions: int | None = None  # sessions one edge holds at once; 0: no limit; unset: as measured (see runner)
    max_transcript_backlog: int = 8  # transcripts waiting for a worker past which new sessions are refused (503)
    max_frame_bytes: int = 24 << 20
    max_upload_bytes: int = 25 << 20  # an audio file sent to /v1/audio/transcriptions or /translations, as OpenAI
    max_upload_seconds: int = 2 * 3600  # and the audio in it (a small file of a low bit rate can hold hours)
    log_max_age_s: int = 7 * 24 * 3600
    log_max_bytes: int = -1
    audio_max_age_s: int = 24 * 3600  # audio records expire sooner than the rest of the log
    stream_replicas: int = 1  # copies of each stream: 3 on a three-node NATS cluster, 1 on the embedded server
    log_format: str = "auto"  # auto (console on a terminal, else json), json, console
    log_level: str = "info"
    worker_name: str = ""
    workers: str = ",".join(WORKER_KINDS)  # the worker kinds this deployment serves (`serve` runs them)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(f"VOCALIS_{spec.name.upper()}")
            if raw is None or raw == "":
                continue
            kinds = typing.get_args(spec.type) or (spec.type,)
            values[spec.name] = _parsed(spec.name, raw, kinds)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings._validate()
        return settings

    def _validate(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value.lower() not in allowed:
                raise SettingsError(f"VOCALIS_{name.upper()}={value!r}: use one of {', '.join(allowed)}")
        for name in ("stt_batch", "stt_lanes"):
            if getattr(self, name) < 0:
                raise SettingsError(f"VOCALIS_{name.upper()}={getattr(self, name)}: 0 (the device's default) or more")
        for name in ("port", "nats_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise SettingsError(f"VOCALIS_{name.upper()}={getattr(self, name)}: a port is 0 to 65535")
        for name in (
            "max_session_s",
            "max_frame_bytes",
            "max_upload_bytes",
            "max_upload_seconds",
            "llm_context",
            "audio_max_age_s",
            "log_max_age_s",
            "stream_replicas",
            "llm_at_once",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"VOCALIS_{name.upper()}={getattr(self, name)}: must be above 0")

        if not self.worker_kinds or set(self.worker_kinds) - set(WORKER_KINDS):
            kinds = ", ".join(WORKER_KINDS)
            raise SettingsError(f"VOCALIS_WORKERS={self.workers!r}: a comma-separated list of {kinds}")

    @property
    def worker_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(kind.strip().lower() for kind in self.workers.split(",") if kind.strip()))

    @property
    def models_path(self) -> Path:
        return self.model_dir or _default_data_dir() / "models"

    @property
    def worker_id(self) -> str:
        return self.worker_name or f"{os.uname().nodename}-{os.getpid()}"


def _parsed(name: str, raw: str, kinds: tuple[object, ...]) -> object:
    if int in kinds:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"VOCALIS_{name.upper()}={raw!r}: expected a whole number") from None
    return Path(raw) if Path in kinds else raw
