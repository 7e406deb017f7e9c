"""Fourier ("sinc") resampling of feature maps, a torch port of ``scipy.signal.resample``.

The reference models up-sample with band-limited FFT interpolation (torchcomplex / tricorder);
both are ports of ``scipy.signal.resample`` without a window. The signal is treated as
periodic, so the wrap-around ringing at the borders is part of the published behaviour.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _resample_axis(x: Tensor, m: int, dim: int) -> Tensor:
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


def fourier_resample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Band-limited resampling of the two spatial axes, H first, then W.

    Args:
        x: ``(B, C, H, W)`` real tensor.
        size: target ``(H', W')``. Axes that already have the target length are untouched.

    Returns:
        ``(B, C, H', W')`` tensor, equal to applying ``scipy.signal.resample`` along H then W.
        Half-precision input is computed in float32 (FFTs need it) and cast back.
    """
    in_dtype = x.dtype
    if in_dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    for dim, m in zip((x.dim() - 2, x.dim() - 1), size):
        if x.shape[dim] != m:
            x = _resample_axis(x, int(m), dim)
    return x.to(in_dtype)
