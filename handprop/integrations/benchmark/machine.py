"""Where the numbers come from: platform, CPUs, load, NumPy (and its BLAS), torch."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np


def machine_info(torch_module: Any = None) -> dict[str, Any]:
    """Platform, CPUs, the load average when asked, NumPy and its BLAS, torch."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "blas": None,
        "torch": None,
        "torch_threads": None,
        "load_average": load_average(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = " ".join(str(blas.get(k, "")) for k in ("name", "version")).strip()
    except Exception:  # older NumPy or an unusual build: not worth failing
        pass
    if torch_module is not None:
        info["torch"] = torch_module.__version__
        info["torch_threads"] = torch_module.get_num_threads()
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (how busy the machine was), where known."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None
