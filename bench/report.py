"""What every benchmark shares: percentiles, the machine it ran on, and writing its JSON and PNG results."""

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

RESULTS = Path(__file__).parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine() -> dict[str, Any]:
    """The machine a result came from: CPU model, cores, memory, and the GPU if one is visible."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "gpu": _gpu(),
    }


def _gpu() -> str | None:
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return "cuda"
    except Exception:
        pass
    return None


def save(name: str, results: Any, figure: Figure | None = None, **extra: Any) -> Path:
    """Write bench/results/<name>.json (and <name>.png when there is a figure); returns the JSON's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **extra,
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {out}")
    if figure is not None:
        png = out.with_suffix(".png")
        figure.savefig(png, dpi=110, bbox_inches="tight")
        plt.close(figure)
        print(f"saved {png}")
    return out


def figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    """A new figure with one set of axes, titled and labelled, with a light grid."""
    fig, axes = plt.subplots(figsize=(7, 4))
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return fig, axes
