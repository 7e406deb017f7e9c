"""PyTorch dataset over a slice store, with the paper's augmentation.

Augmentation (training only, as published): rotation by an angle uniform in [-330°, 330°]
about the centre with nearest interpolation and zero fill, then horizontal and vertical flips
with probability 0.5 each - the same parameters for every channel, and for the mask when it is
requested. It acts on the (H, W) plane of (C, H, W) slices (the reference's ToTensor on CHW
arrays rotated the channel axis instead, defect D4). Normalisation comes after augmentation.

Randomness comes from torch's global generator, which DataLoader seeds per worker from the main
process's seed, so a seeded run draws the same augmentations with any number of workers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .normalise import normalise
from .store import SliceStore


@dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation; set a probability to 0 or ``max_angle`` to 0 to disable.

    ``channel_scale`` s > 0 (not in the paper) multiplies each contrast by its own factor,
    log-uniform in ``[1/(1+s), 1+s]``: the per-slice max normalisation keeps the ratios
    between contrasts, a per-subject constant by which a network can recognise the patient
    (and so its grade) from any pixel."""

    max_angle: float = 330.0
    p_hflip: float = 0.5
    p_vflip: float = 0.5
    channel_scale: float = 0.0

    def __call__(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``image (C, H, W)`` float, ``mask (H, W)`` or None -> both transformed alike."""
        angle = (torch.rand(()).item() * 2 - 1) * self.max_angle
        hflip = torch.rand(()).item() < self.p_hflip
        vflip = torch.rand(()).item() < self.p_vflip
        if self.channel_scale > 0:
            log_s = math.log1p(self.channel_scale)
            factors = torch.exp((torch.rand(image.shape[0]) * 2 - 1) * log_s)
            image = image * factors.to(image.dtype)[:, None, None]
        stack = image if mask is None else torch.cat([image, mask[None].to(image.dtype)])
        if angle:
            stack = rotate_nearest(stack, angle)
        if hflip:
            stack = stack.flip(-1)
        if vflip:
            stack = stack.flip(-2)
        if mask is None:
            return stack, None
        return stack[:-1], stack[-1].round().to(mask.dtype)


def rotate_nearest(x: Tensor, degrees: float) -> Tensor:
    """Rotate ``(C, H, W)`` about the image centre, nearest neighbour, zero fill."""
    theta = math.radians(degrees)
    h, w = x.shape[-2:]
    # affine_grid works in normalised coordinates; scale to keep pixels square when H != W
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]],
                          dtype=torch.float32)[None]
    grid = F.affine_grid(matrix, (1, x.shape[0], h, w), align_corners=False)
    out = F.grid_sample(x[None].float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[0]
    return out.to(x.dtype)


class SliceDataset(Dataset):
    """Slices ``rows`` of a store as dicts:

    ``image`` (C, H, W) float32 normalised; ``label`` int64 scalar; ``mask`` (H, W) int64
    sub-region labels (if ``with_mask``); ``row`` the store row (the slice's id);
    ``patient_id`` str.
    """

    def __init__(self, store: SliceStore | str, rows=None, normalisation: str = "max",
                 augmentation: Augmentation | None = None, with_mask: bool = True):
        self.store = store if isinstance(store, SliceStore) else SliceStore(store)
        self.rows = np.arange(len(self.store)) if rows is None else np.asarray(rows, dtype=int)
        self.normalisation = normalisation
        self.augmentation = augmentation
        self.with_mask = with_mask
        index = self.store.index
        self.labels = index["label"].to_numpy()[self.rows]
        self.patient_ids = index["patient_id"].to_numpy()[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        raw = torch.from_numpy(np.asarray(self.store.images[row], dtype=np.float32))
        mask = torch.from_numpy(np.asarray(self.store.masks[row], dtype=np.int64)) \
            if self.with_mask else None
        image = raw
        if self.augmentation is not None:
            image, mask = self.augmentation(raw, mask)
        item = {"image": normalise(image, self.normalisation, fallback=raw),
                "label": torch.tensor(int(self.labels[i])), "row": row,
                "patient_id": str(self.patient_ids[i])}
        if mask is not None:
            item["mask"] = mask
        return item
