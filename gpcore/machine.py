"""The machine, described once for every result label (study, efficiency table, benchmarks):
CPU model, its bf16 hardware (the numeric path training takes), cores, GPU, versions."""
from __future__ import annotations

import contextlib
import os
import platform
import time


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; the platform's name elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def cpu_label() -> str:
    """The CPU's model and its bf16 hardware, e.g. ``Intel(R) Xeon(R) ... (AMX bf16)``, or
    ``AMD EPYC (no bf16 hardware)``: training takes the fp32 path there (bf16 is emulated)."""
    from .training.fast import cpu_bf16_kind

    kind = cpu_bf16_kind()
    bf16 = f"{'AMX' if kind == 'amx' else 'AVX-512'} bf16" if kind else "no bf16 hardware"
    return f"{cpu_model()} ({bf16})"


def describe() -> str:
    """One line for result labels: the CPU (:func:`cpu_label`), cores, GPU."""
    text = f"{cpu_label()}, {cores()} cores"
    return text + (f", {gpu()}" if gpu() else "")


def environment() -> dict:
    """Hardware and versions for a results table."""
    import torch

    return {"machine": describe(), "cpu": cpu_label(), "cores": cores(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "gpu": gpu()}


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set ``torch.set_num_threads`` (None: unchanged)."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
