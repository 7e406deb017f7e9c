"""Fourier ("sinc") resampling of feature maps, a torch port of ``scipy.signal.resample``.

The reference models up-sample with band-limited FFT interpolation (torchcomplex / tricorder);
both are ports of ``scipy.signal.resample`` without a window. The signal is treated as
periodic, so the wrap-around ringing at the borders is part of the published behaviour.

Resampling one axis from ``n`` to ``m`` samples is linear, so :func:`fourier_resample` applies
it as a matrix product with the ``(m, n)`` matrix that the FFT route gives for the unit
vectors (built once in float64 and cached): the same numbers to rounding, but a BLAS product
instead of an rfft, a zero-pad copy and an irfft per call - on a CPU the FFT route took most of
GP-UNet's forward pass at 64-128 px (``benchmarks/resample.py`` prints the ratio).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import lru_cache

import torch
from torch import Tensor


def _resample_axis_fft(x: Tensor, m: int, dim: int) -> Tensor:
    """Resample ``x`` to length ``m`` along ``dim`` (one axis of ``scipy.signal.resample``)."""
    n = x.shape[dim]
    spectrum = torch.fft.rfft(x, dim=dim)
    nyquist_len = min(n, m)
    keep = nyquist_len // 2 + 1
    out_bins = m // 2 + 1
    spectrum = spectrum.narrow(dim, 0, keep)
    if out_bins > keep:
        pad_shape = list(spectrum.shape)
        pad_shape[dim] = out_bins - keep
        spectrum = torch.cat([spectrum, spectrum.new_zeros(pad_shape)], dim=dim)
    if nyquist_len % 2 == 0:
        # The Nyquist bin of an even-length signal holds the energy of +N/2 and -N/2 together:
        # halve it when up-sampling (it is split in two), double it when down-sampling.
        # Only that bin is scaled (in place: a multiply of the whole spectrum by a vector of
        # ones elsewhere cost a full pass over it; the result is bit-identical).
        spectrum.narrow(dim, nyquist_len // 2, 1).mul_(0.5 if m > n else 2.0)
    return torch.fft.irfft(spectrum, n=m, dim=dim) * (m / n)


_FFT_ROUTE = False


@contextmanager
def fft_route():
    """Inside the block :func:`fourier_resample` takes the FFT route on every device. FLOP
    counts use it (``gpcore.models.profile.flops_of``): ``FlopCounterMode`` does not count
    FFTs, and the paper's counts do not include the resampling, whereas the matrix products
    would add ``2 m n`` per output row."""
    global _FFT_ROUTE
    saved, _FFT_ROUTE = _FFT_ROUTE, True
    try:
        yield
    finally:
        _FFT_ROUTE = saved


@lru_cache(maxsize=64)
def resample_matrix(n: int, m: int, dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> Tensor:
    """``(m, n)`` matrix ``R`` with ``resample(x, m) = R @ x`` for a length-``n`` signal."""
    eye = torch.eye(n, dtype=torch.float64)
    return _resample_axis_fft(eye, m, 0).to(dtype=dtype, device=device)


def _compute_dtype(x: Tensor) -> torch.dtype:
    # FFTs and the reference run in float32 at least: half-precision input is promoted
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def fourier_resample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Band-limited resampling of the two spatial axes, H first, then W.

    Args:
        x: ``(B, C, H, W)`` real tensor.
        size: target ``(H', W')``. Axes that already have the target length are untouched.

    Returns:
        ``(B, C, H', W')`` tensor, equal to applying ``scipy.signal.resample`` along H then W.
        Half-precision input is computed in float32 and cast back.
    """
    if _FFT_ROUTE:
        return fourier_resample_fft(x, size)
    in_dtype = x.dtype
    dtype = _compute_dtype(x)
    x = x.to(dtype)
    h, w = x.shape[-2:]
    # in float32 under autocast too (autocast would run the products in bf16): the route
    # changes speed, not the numbers (bf16 output equal to the FFT route's to rounding)
    with (torch.autocast(x.device.type, enabled=False)
          if torch.amp.is_autocast_available(x.device.type) else nullcontext()):
        if h != size[0]:
            x = torch.matmul(resample_matrix(h, int(size[0]), dtype, x.device), x)
        if w != size[1]:
            x = torch.matmul(x, resample_matrix(w, int(size[1]), dtype, x.device).T)
    return x.to(in_dtype)


def fourier_resample_fft(x: Tensor, size: tuple[int, int]) -> Tensor:
    """:func:`fourier_resample` by FFTs (the route of the reference code), kept to check and
    time the matrix route against."""
    in_dtype = x.dtype
    x = x.to(_compute_dtype(x))
    for dim, m in zip((x.dim() - 2, x.dim() - 1), size):
        if x.shape[dim] != m:
            x = _resample_axis_fft(x, int(m), dim)
    return x.to(in_dtype)
