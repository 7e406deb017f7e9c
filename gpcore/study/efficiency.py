"""Measured efficiency of the GP models: throughput, latency, FLOP/s against the machine's
matmul peak, and peak memory. The benchmark suite (``python -m benchmarks.run``) and the
efficiency notebook both use these functions, so their numbers come from the same code.

>>> from gpcore.study.efficiency import efficiency_table
>>> efficiency_table(["gp_unet"], "cpu", size=64, batch_sizes=(1, 8))  # doctest: +SKIP

Timings are wall-clock on the calling process (CUDA synchronised). They depend on whatever
else the machine runs: record that next to any number you keep.
"""
from __future__ import annotations

import ctypes
import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import count_parameters, create_model
from ..machine import environment  # noqa: F401  (the benchmarks' and notebook's entry)
from ..models.profile import count_flops, flops_of
from ..training.fast import FastPaths

#: class weights of the synthetic weighted cross-entropy (roughly BraTS-balanced)
CLASS_WEIGHTS = (0.6, 2.0, 1.0)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_batch(batch: int, channels: int, size: int, device, seed: int = 0):
    """A synthetic max-normalised batch ``x (B, C, size, size)`` in [0, 1] and labels ``y``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=g)
    y = torch.randint(0, len(CLASS_WEIGHTS), (batch,), generator=g)
    return x.to(device), y.to(device)


def make_optimiser(net: nn.Module, fast: FastPaths) -> torch.optim.Optimizer:
    """The training optimiser of ``gpcore/configs/train.yaml`` (the paper's Adam) for ``net``
    (:func:`gpcore.training.engine.make_optimiser`); fused only where ``fast`` says so."""
    from ..training.config import train_defaults
    from ..training.engine import make_optimiser as training_optimiser

    return training_optimiser(net.parameters(), train_defaults(), fast=fast)


def build(model: str | Callable[[], nn.Module], device, **model_kwargs) -> nn.Module:
    """A fresh model on ``device``: a registered name (paper configuration unless overridden)
    or a factory."""
    torch.manual_seed(0)
    net = create_model(model, **model_kwargs) if isinstance(model, str) else model()
    return net.to(device)


# --------------------------------------------------------------------------------------------
# FLOPs and the machine's peak
# --------------------------------------------------------------------------------------------
def _meta_model(model, model_kwargs):
    with torch.device("meta"):
        return create_model(model, **model_kwargs) if isinstance(model, str) else model()


def forward_flops(model: str | Callable[[], nn.Module], size: int, channels: int = 4,
                  **model_kwargs) -> int:
    """FLOPs of one eval ``forward_with_heatmap`` of one ``channels × size × size`` slice
    (``FlopCounterMode``: convolutions and matmuls; FFTs and element-wise ops not counted),
    counted on the meta device: instant, no memory."""
    return count_flops(_meta_model(model, model_kwargs), (1, channels, size, size))


def training_flops(model: str | Callable[[], nn.Module], size: int, channels: int = 4,
                   **model_kwargs) -> int:
    """FLOPs of one training step's forward + backward for one slice, counted by
    ``FlopCounterMode`` over both passes (the input needs no gradient, so the first layer's
    input-gradient convolution is rightly absent: a little under 3 × forward)."""
    net = _meta_model(model, model_kwargs).train()
    x = torch.zeros(1, channels, size, size, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    return flops_of(lambda: F.cross_entropy(net(x).float(), y).backward())


def matmul_peak(device, dtype: torch.dtype = torch.float32, n: int | None = None,
                seconds: float = 1.0) -> float:
    """Measured dense matmul throughput (FLOP/s) of ``torch.mm`` on ``n × n`` matrices: the
    reference 'peak' against which model FLOP/s are reported. bf16 on a CPU without bf16
    hardware is emulated (~0.3 GFLOP/s on an AVX2 EPYC: one 2048² product takes a minute), so
    there the default ``n`` is 256."""
    from ..training.fast import cpu_has_native_bf16

    device = torch.device(device)
    if n is None and device.type == "cpu" and dtype == torch.bfloat16 \
            and not cpu_has_native_bf16():
        n = 256
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    sync(device)
    reps, best, start = 0, float("inf"), time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
        reps += 1
    return 2 * n ** 3 / best


# --------------------------------------------------------------------------------------------
# peak memory
# --------------------------------------------------------------------------------------------
def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover - psutil is pinned
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class PeakMemory:
    """Context manager: peak memory while the block runs.

    CUDA: ``torch.cuda.max_memory_allocated`` (reset on entry). CPU: the process's resident
    set: the kernel's high-water mark (VmHWM, reset on entry through
    ``/proc/self/clear_refs``) where allowed, otherwise RSS sampled every 2 ms. ``peak`` is the
    absolute peak, ``delta`` the rise above the level on entry (the heap is trimmed first so
    memory freed by an earlier measurement does not hide this one's)."""

    device: torch.device | str = "cpu"
    peak: int = 0
    start: int = 0
    method: str = ""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def delta(self) -> int:
        return max(self.peak - self.start, 0)

    def __enter__(self):
        self.device = torch.device(self.device)
        _trim_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self.start = _rss()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "RSS sampled"
            self.peak = self.start
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())
        else:
            self.peak = _vm_hwm() or _rss()
        return False


# --------------------------------------------------------------------------------------------
# training and inference timings
# --------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """``seconds`` per timed repetition (a training step or an inference batch)."""

    batch: int
    seconds: list[float]
    peak_mem: int = 0
    peak_mem_delta: int = 0
    memory_method: str = ""

    #: how :attr:`step_s` summarises the repetitions: "median", "mean" or "min" (the
    #: fastest repetition: the least disturbed one on a machine shared with other jobs)
    statistic: str = "median"

    @property
    def mean_s(self) -> float:
        return sum(self.seconds) / len(self.seconds)

    @property
    def step_s(self) -> float:
        """Seconds per repetition, by :attr:`statistic`."""
        if self.statistic == "min":
            return min(self.seconds)
        if self.statistic == "mean":
            return self.mean_s
        ordered = sorted(self.seconds)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def slices_per_s(self) -> float:
        return self.batch / self.step_s


def _timed_reps(fn, device, warmup: int, reps: int, max_seconds: float | None) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times, start = [], time.perf_counter()
    while len(times) < reps:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return times


def training_step(model: str | Callable[[], nn.Module], fast: FastPaths, batch: int, size: int,
                  channels: int = 4, **model_kwargs) -> Callable[[], None]:
    """A fresh model, Adam and a synthetic batch on ``fast.device``; returns one training
    step: forward, class-weighted cross-entropy, backward, Adam, with ``fast``'s switches
    (``FastPaths.eager(device)``: the plain fp32 loop). The step owns the model: dropping it
    frees everything."""
    device = fast.device
    net = fast.prepare_model(build(model, device, **model_kwargs)).train()
    step_net = fast.compile_model(net)
    opt = make_optimiser(net, fast)
    weights = torch.tensor(CLASS_WEIGHTS, device=device)
    x, y = make_batch(batch, channels, size, device)
    x = fast.prepare_batch(x)

    return lambda: optimiser_step(step_net, opt, fast, x, y, weights)


def optimiser_step(net: nn.Module, opt: torch.optim.Optimizer, fast: FastPaths, x: Tensor,
                   y: Tensor, weights: Tensor | None = None) -> None:
    """One training step of the benchmarks: forward ``x (B, C, H, W)`` under ``fast``'s
    autocast, class-weighted cross-entropy against ``y (B,)`` (``weights (K,)``; None:
    unweighted), backward, optimiser step."""
    fast.apply_backend_flags()
    opt.zero_grad(set_to_none=True)
    with fast.autocast():
        logits = net(x)
    per_sample = F.cross_entropy(logits.float(), y, reduction="none")
    w = torch.ones_like(per_sample) if weights is None else weights[y]
    ((w * per_sample).sum() / w.sum()).backward()
    opt.step()


def inference_call(model: str | Callable[[], nn.Module], fast: FastPaths, batch: int,
                   size: int, channels: int = 4, **model_kwargs) -> Callable[[], tuple]:
    """A fresh eval-mode model and a synthetic batch; returns one call of
    ``forward_with_heatmap`` (logits and the full-resolution heatmap). ``FastPaths.eager``:
    fp32 under ``torch.no_grad``; otherwise ``fast``'s layout and autocast under
    ``torch.inference_mode``."""
    device = fast.device
    eager = fast.is_eager
    net = fast.prepare_model(build(model, device, **model_kwargs)).eval()
    run = fast.compile_model(net.forward_with_heatmap)
    x, _ = make_batch(batch, channels, size, device)
    x = fast.prepare_batch(x)

    def infer():
        fast.apply_backend_flags()
        with torch.no_grad() if eager else fast.inference_context():
            return run(x)

    return infer


def time_training(model: str | Callable[[], nn.Module], fast: FastPaths, batch: int, size: int,
                  steps: int = 5, warmup: int = 1, max_seconds: float | None = None,
                  channels: int = 4, statistic: str = "median", **model_kwargs) -> Timing:
    """Timed :func:`training_step` repetitions. The model and optimiser are built inside the
    measurement, so the peak memory includes weights, gradients, Adam state and
    activations."""
    with PeakMemory(fast.device) as mem:
        step = training_step(model, fast, batch, size, channels, **model_kwargs)
        times = _timed_reps(step, fast.device, warmup, steps, max_seconds)
        del step
    return Timing(batch, times, mem.peak, mem.delta, mem.method, statistic)


def time_inference(model: str | Callable[[], nn.Module], fast: FastPaths, batch: int,
                   size: int, reps: int = 10, warmup: int = 1,
                   max_seconds: float | None = None, channels: int = 4,
                   statistic: str = "median", **model_kwargs) -> Timing:
    """Timed :func:`inference_call` repetitions (latency of one batch), with peak memory."""
    with PeakMemory(fast.device) as mem:
        infer = inference_call(model, fast, batch, size, channels, **model_kwargs)
        times = _timed_reps(infer, fast.device, warmup, reps, max_seconds)
        del infer
    return Timing(batch, times, mem.peak, mem.delta, mem.method, statistic)


def interleaved(calls: dict[str, Callable[[], object]], device, warmup: int = 1,
                reps: int = 3) -> dict[str, list[float]]:
    """Time several variants round-robin (A B C, A B C, ...): on a machine shared with other
    jobs, a disturbance then hits every variant alike rather than whichever ran at the time.
    All variants are alive at once (memory!). Returns the seconds of each repetition."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


# --------------------------------------------------------------------------------------------
# the notebook's table
# --------------------------------------------------------------------------------------------
def efficiency_table(models: Sequence[str] = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet"),
                     device: str | torch.device = "cpu", size: int = 240,
                     batch_sizes: Sequence[int] = (1, 32), fast: FastPaths | None = None,
                     reps: int = 5, max_seconds: float | None = 30.0,
                     progress: bool = True) -> pd.DataFrame:
    """One row per model (paper configuration) on ``device`` at ``4 × size × size``:
    parameters, GFLOPs per slice (``forward_with_heatmap``), inference latency at the smallest
    batch size and throughput at the largest, and the peak memory of inference at the largest
    batch (CUDA: allocated; CPU: rise of the resident set). ``fast``: the path to measure
    (default: ``FastPaths.auto(device)``, the configured defaults); ``FastPaths.eager(device)``
    for plain fp32."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    fast = fast or FastPaths.auto(device)
    small, large = min(batch_sizes), max(batch_sizes)
    rows = []
    for name in tqdm(list(models), desc="efficiency", disable=not progress):
        with torch.device("meta"):
            params = count_parameters(create_model(name))
        lat = time_inference(name, fast, small, size, reps=reps, max_seconds=max_seconds)
        thr = time_inference(name, fast, large, size, reps=max(1, reps // 2),
                             max_seconds=max_seconds)
        rows.append({"model": name, "parameters": params,
                     "gflops_per_slice": forward_flops(name, size) / 1e9,
                     f"latency_ms_batch{small}": lat.step_s * 1e3,
                     f"slices_per_s_batch{large}": thr.slices_per_s,
                     f"peak_mem_mib_batch{large}": (thr.peak if device.type == "cuda"
                                                    else thr.peak_mem_delta) / 2**20,
                     "device": str(device), "size": size, "path": fast.describe()})
    return pd.DataFrame(rows)
