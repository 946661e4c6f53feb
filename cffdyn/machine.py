"""What a timing was measured on: recorded next to every timing (benchmarks, studies, paper).

A figure without the machine's load and device is not a measurement we can compare, so every
timed result carries :func:`machine_info` (cheap: no imports beyond the standard library unless
torch is already loaded).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

__all__ = ["machine_info", "load_average"]


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | None = None) -> dict[str, Any]:
    """Host, load, CPU count and model, Python/torch versions and, for CUDA, the GPU's name."""
    info: dict[str, Any] = {
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg": load_average(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device and str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    info["device"] = device or "cpu"
    return info
