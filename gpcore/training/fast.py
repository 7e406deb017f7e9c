"""Switchable fast paths of training and inference, resolved once from ``train.fast``.

>>> fast = FastPaths.from_config(cfg["train"]["fast"], device, deterministic=True)
>>> fast.apply_backend_flags()                  # cudnn.benchmark (off when deterministic)
>>> net = fast.prepare_model(net)               # channels_last
>>> step_net = fast.compile_model(net)         # torch.compile, eager fallback on failure
>>> opt = torch.optim.Adam(net.parameters(), lr=..., **fast.optimiser_kwargs())
>>> loader = DataLoader(ds, ..., **fast.loader_kwargs(num_workers, deterministic))
>>> x = fast.prepare_batch(batch["image"].to(device, non_blocking=True))
>>> with fast.autocast():
...     logits = step_net(x)

``"auto"`` means *on where it was measured to help* (``benchmarks/README.md``, issue 8):

=====================  ========================  ==============================================
switch                 CUDA                      CPU
=====================  ========================  ==============================================
``bf16`` (autocast)    on                        on only with bf16 hardware: AMX tiles (Xeon
                                                 Sapphire Rapids+; training 1.6-3.4x) or
                                                 AVX-512 BF16 (AMD Zen 4/5; 1.3-2.1x);
                                                 elsewhere bf16 is emulated: off
``channels_last``      on                        on together with bf16 (bf16 + channels_last:
                                                 2.4-5.5x; in fp32 it is a wash, 0.95-1.22x)
``cudnn_benchmark``    on unless deterministic   n/a
``pin_memory``         on                        off
``compile``            as given (no "auto")      as given (inductor on CPU takes minutes)
=====================  ========================  ==============================================

Fused Adam is used on CUDA (``optimiser_kwargs``). None of these changes the model's
parameters or checkpoints: channels_last is a memory layout, autocast a compute precision.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

SWITCHES = ("bf16", "channels_last", "compile", "cudnn_benchmark", "pin_memory",
            "persistent_workers")


def _cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_bf16_kind() -> str | None:
    """Which bf16 hardware oneDNN can use on this CPU: ``"amx"`` (AMX tiles, Xeon Sapphire
    Rapids and later), ``"avx512_bf16"`` (AVX-512 BF16 dot products, e.g. AMD Zen 4/5, Cooper
    Lake), or ``None`` (bf16 emulated)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if probe is not None and probe():
            return "amx"
    except Exception:  # pragma: no cover - unusual builds
        pass
    flags = _cpu_flags()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "avx512_bf16" if "amx_bf16" not in flags else "amx"
    return None


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 hardware that oneDNN uses for bf16 convolutions and matmuls:
    AMX tiles (training steps 1.6-3.4x faster than fp32 on a Xeon) or AVX-512 BF16 (1.3-2.1x on
    an AMD EPYC; issue 13, ``benchmarks/README.md``). Keyed on AMX alone before, the fast path
    switched itself off on the EPYC. Without either, bf16 is emulated: ``"auto"`` leaves it off."""
    return cpu_bf16_kind() is not None


def auto_default(key: str, device: torch.device | str, bf16: bool | None = None) -> bool:
    """What ``"auto"`` resolves to for ``key`` on ``device`` (see the module's table); on a CPU,
    ``channels_last`` follows ``bf16`` (the resolved value, when given)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return key in ("bf16", "channels_last", "cudnn_benchmark", "pin_memory")
    if kind == "cpu" and key == "bf16":
        return cpu_has_native_bf16()
    if kind == "cpu" and key == "channels_last":
        return cpu_has_native_bf16() if bf16 is None else bf16
    return False


@dataclass
class FastPaths:
    """Resolved fast-path switches for one device (all off: the plain eager fp32 path)."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    pin_memory: bool = False
    persistent_workers: bool = False
    fused_adam: bool = False

    def __post_init__(self):
        self.device = torch.device(self.device)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg_fast: dict | None, device: torch.device | str,
                    deterministic: bool = False) -> "FastPaths":
        """Resolve a ``train.fast`` mapping (values ``true``/``false``/``"auto"``)."""
        device = torch.device(device)
        cfg_fast = dict(cfg_fast or {})
        unknown = set(cfg_fast) - set(SWITCHES)
        if unknown:
            raise ValueError(f"train.fast: unknown switch(es) {sorted(unknown)}; known: "
                             f"{', '.join(SWITCHES)}")

        flags: dict[str, bool] = {}
        for key in SWITCHES:  # bf16 first: channels_last's "auto" on a CPU follows it
            value = cfg_fast.get(key, False)
            if value == "auto":
                flags[key] = auto_default(key, device, flags.get("bf16"))
            elif isinstance(value, bool) or value is None:
                flags[key] = bool(value)
            else:
                raise ValueError(f"train.fast.{key} must be true, false or 'auto', got {value!r}")
        if device.type != "cuda":
            flags["cudnn_benchmark"] = flags["pin_memory"] = False
        if deterministic:  # autotuning picks algorithms by timing: not reproducible
            flags["cudnn_benchmark"] = False
        return cls(device=device, fused_adam=device.type == "cuda", **flags)

    @classmethod
    def eager(cls, device: torch.device | str) -> "FastPaths":
        """The plain baseline: NCHW fp32, no autocast, no compile, non-fused Adam."""
        return cls(device=torch.device(device))

    @classmethod
    def auto(cls, device: torch.device | str, compile: bool = False) -> "FastPaths":
        """Every switch on ``"auto"`` (the defaults of ``gpcore/configs/train.yaml``)."""
        cfg = {key: "auto" for key in SWITCHES if key != "compile"}
        cfg.update(compile=compile, persistent_workers=True)
        return cls.from_config(cfg, device)

    @property
    def is_eager(self) -> bool:
        """All switches off."""
        return not any(v for k, v in asdict(self).items() if k != "device")

    def describe(self) -> str:
        on = [k for k, v in asdict(self).items() if v is True]
        return "+".join(on) if on else "eager fp32"

    # ---- model, batch, optimiser, loader -------------------------------------------------------
    def apply_backend_flags(self) -> None:
        """Set ``torch.backends.cudnn.benchmark`` (process-wide)."""
        torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def prepare_model(self, net: nn.Module) -> nn.Module:
        """Convert parameters to channels_last (in place, returns ``net``)."""
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def prepare_batch(self, x: torch.Tensor) -> torch.Tensor:
        """A (B, C, H, W) batch in the memory layout the model was prepared for."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """bf16 autocast context when ``bf16`` is on, else a no-op context."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def inference_context(self):
        """``torch.inference_mode`` plus :meth:`autocast` (the fast path's inference)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(self.autocast())
        return stack

    def optimiser_kwargs(self) -> dict:
        """Extra ``torch.optim.Adam`` arguments: fused kernels on CUDA."""
        return {"fused": True} if self.fused_adam else {"fused": False}

    def loader_kwargs(self, num_workers: int, deterministic: bool = False) -> dict:
        """``DataLoader`` arguments. Persistent workers keep their RNG streams across epochs,
        which would make an epoch depend on the ones before it: off when deterministic."""
        return {"num_workers": num_workers, "pin_memory": self.pin_memory,
                "persistent_workers": num_workers > 0 and self.persistent_workers
                and not deterministic}

    def compile_model(self, net, **compile_kwargs):
        """``torch.compile(net)`` when ``compile`` is on, with an eager fallback.

        ``torch.compile`` compiles lazily, at the first call, so a platform without a working
        compiler fails there rather than here: the returned callable catches that first
        failure, warns once and runs eager from then on. Attribute access (``.train()``,
        ``.eval()``, ``.forward_with_heatmap``) goes to ``net``. Returns ``net`` unchanged when
        ``compile`` is off.
        """
        if not self.compile:
            return net
        try:
            compiled = torch.compile(net, **compile_kwargs)
        except Exception as err:  # an unsupported platform must not stop training
            _warn_fallback(err)
            return net
        return CompileWithFallback(net, compiled)


def _warn_fallback(err: BaseException) -> None:
    warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:300]}); "
                  f"continuing in eager mode", RuntimeWarning, stacklevel=3)


class CompileWithFallback:
    """Calls the compiled module; on its first failure warns and switches to eager for good.

    Not an ``nn.Module`` on purpose: it adds no prefix to state-dict keys; save and load the
    wrapped module (``.module``)."""

    def __init__(self, module: nn.Module, compiled):
        self.module = module
        self.compiled = compiled
        self.failed: BaseException | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:
                self.failed = err
                _warn_fallback(err)
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__dict__["module"], name)
