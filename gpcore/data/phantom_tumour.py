"""Tumours of the phantom: BraTS 2020 labels and their appearance per contrast.

Labels (as BraTS 2020): 0 background, 1 necrotic / non-enhancing core (NCR/NET), 2 oedema (ED),
4 enhancing tumour (ET); 3 never occurs. The core is a thresholded smooth random field inside an
anisotropic distance envelope around a seed in white matter; ET is a rim of irregular thickness
inside the core, NCR what is left; ED a shell of irregular thickness around the core that spreads
further along white matter. All work is done in a local cube around the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .phantom_anatomy import smooth_field

NCR, ED, ET = 1, 2, 4
#: half side of the local cube (voxels): the tumour, oedema included, spans at most
#: 2 * HALF + 1 = 81 slices, well under the ~130 brain slices, so tumour-free slices remain
HALF = 40


@dataclass
class TumourPlan:
    """Random choices of one tumour, drawn before the anatomy is warped (mass effect needs them).

    Lengths in mm (= voxels). ``kind``: "hgg", "hgg_weak_necrosis", "lgg" or "lgg_enhancing".
    """

    grade: str
    kind: str
    core_radius: float
    axes: np.ndarray  # (3,) relative semi-axes of the envelope
    rotation: np.ndarray  # (3, 3)
    rim: float  # ET rim thickness
    oedema: float  # ED shell thickness
    mass: float  # peak radial displacement of the anatomy


def plan_tumour(rng: np.random.Generator, grade: str) -> TumourPlan:
    """Sizes from wide log-normal distributions that overlap between grades."""
    if grade == "HGG":
        kind = "hgg_weak_necrosis" if rng.random() < 0.15 else "hgg"
        radius = float(np.clip(rng.lognormal(np.log(17.0), 0.3), 8, 28))
        rim = float(rng.uniform(2.0, 5.0))
        if kind == "hgg_weak_necrosis":
            rim = radius * float(rng.uniform(0.7, 1.3))  # the rim fills (almost) all the core
        oedema = float(rng.uniform(6.0, 20.0))
        mass = radius * float(rng.uniform(0.1, 0.35))
    else:
        kind = "lgg_enhancing" if rng.random() < 0.15 else "lgg"
        radius = float(np.clip(rng.lognormal(np.log(14.0), 0.35), 6, 26))
        rim = 0.0
        oedema = float(rng.uniform(2.0, 8.0))
        mass = radius * float(rng.uniform(0.0, 0.2))
    axes = rng.uniform(0.7, 1.3, 3)
    axes /= np.prod(axes) ** (1 / 3)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return TumourPlan(grade, kind, radius, axes, q, rim, oedema, mass)


def mass_displacement(plan: TumourPlan, shape: tuple[int, ...], seed: np.ndarray
                      ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """``(cube, u)``: radial displacement ``u`` (``(3, *cube_shape)``, output voxels) to subtract
    from the sampling positions inside ``cube`` of an array of ``shape``; zero elsewhere.

    Zero at the seed, peak ``plan.mass`` at one core radius, Gaussian decay beyond (below 2 %
    of the peak past 3 radii, where the cube ends): the template content is pushed outward, as
    by an expanding mass. ``mass < 0.6 R`` keeps the map invertible.
    """
    big_r = plan.core_radius
    reach = int(np.ceil(3 * big_r))
    cube = tuple(slice(max(int(c) - reach, 0), min(int(c) + reach + 1, n))
                 for c, n in zip(seed, shape))
    grid = np.ogrid[cube]
    rel = [(g - c).astype(np.float32) for g, c in zip(grid, seed)]
    r2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
    # u(r)/r = m/R * exp(1/2 - r^2 / (2 R^2)): u peaks at r = R with value m
    factor = np.float32(plan.mass / big_r) * np.exp(np.float32(0.5) - r2 / np.float32(2 * big_r ** 2))
    return cube, np.stack([factor * rel[k] for k in range(3)])


def local_cube(seed: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """The cube of half side :data:`HALF` around ``seed``, clipped to an array of ``shape``."""
    return tuple(slice(max(int(c) - HALF, 0), min(int(c) + HALF + 1, n))
                 for c, n in zip(seed, shape))


def grow_labels(rng: np.random.Generator, plan: TumourPlan, seed: np.ndarray,
                brain: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """uint8 labels ``(0, 1, 2, 4)`` of the local cube around ``seed`` (cube coordinates)."""
    shape = brain.shape
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    rel = [(g - c).astype(np.float32) for g, c in zip(grid, seed)]
    # anisotropic, rotated distance envelope in units of the core radius
    envelope = np.zeros(shape, np.float32)
    for k in range(3):
        proj = sum(plan.rotation[k, j] * rel[j] for j in range(3))
        envelope += (proj / (plan.axes[k] * plan.core_radius)) ** 2
    envelope = np.sqrt(envelope)
    lobes = smooth_field(rng, shape, max(plan.core_radius / 3, 3.0), 1.0)
    # an irregular ball well inside the cube, so that no compartment is cut by a cube face
    radius = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    allowed = (radius < HALF - 8 - 3.0 * np.clip(lobes, -1.5, 1.5)) & (brain > 0.5)
    core = (envelope + 0.35 * lobes < 1.0) & allowed
    core = _component_at(core, seed)
    if not core.any():  # degenerate draw: fall back to the bare envelope
        core = (envelope < 1.0) & allowed
    labels = np.zeros(shape, np.uint8)

    # ED: a shell of irregular thickness around the core, wider along white matter
    outside = ndi.distance_transform_edt(~core)
    thick = plan.oedema * np.clip(1.0 + 0.5 * smooth_field(rng, shape, 6.0), 0.2, None)
    oedema = (outside <= thick * (0.25 + 0.9 * wm)) & allowed & ~core
    labels[oedema] = ED

    inside = ndi.distance_transform_edt(core)
    if plan.kind.startswith("hgg"):
        rim = plan.rim * np.clip(1.0 + 0.5 * smooth_field(rng, shape, 4.0), 0.3, None)
        enhancing = core & (inside <= rim)
        labels[core] = NCR
        labels[enhancing] = ET
    else:
        labels[core] = NCR
        if plan.kind == "lgg_enhancing":
            patches = smooth_field(rng, shape, 3.0, 1.0)
            labels[core & (patches > 1.0)] = ET
    return labels


def _component_at(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected component of ``mask`` holding ``seed``, else the largest one."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    at = lab[tuple(np.round(seed).astype(int))]
    if at == 0:
        at = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return lab == at


#: relative intensities (T1, T1CE, T2, FLAIR) of each tumour compartment, on the healthy scale
#: (T1 WM = 1): HGG necrosis dark T1 / bright T2; ET bright on T1CE; ED FLAIR-bright;
#: LGG core T1-hypo, T2/FLAIR-hyper, non-enhancing; LGG minority ET faint.
APPEARANCE = {
    "hgg_ncr": (0.35, 0.38, 0.95, 0.55),
    "hgg_et": (0.68, 1.55, 0.72, 0.90),
    "lgg_net": (0.55, 0.57, 0.88, 0.98),
    "lgg_et": (0.62, 1.05, 0.80, 0.92),
    "ed": (0.62, 0.64, 0.80, 1.08),
}
CONTRAST_INDEX = {"t1": 0, "t1ce": 1, "t2": 2, "flair": 3}


def paint(rng: np.random.Generator, plan: TumourPlan, labels: np.ndarray,
          images: dict[str, np.ndarray]) -> None:
    """Blend tumour appearance into the local-cube views ``images`` (modified in place).

    Each compartment's indicator is smoothed (partial volume at its border) and textured; oedema
    keeps part of the underlying anatomy, as infiltrated tissue does.
    """
    shape = labels.shape
    ncr_key = "hgg_ncr" if plan.grade == "HGG" else "lgg_net"
    et_key = "hgg_et" if plan.grade == "HGG" else "lgg_et"
    parts = [(ED, "ed", 0.75), (NCR, ncr_key, 1.0), (ET, et_key, 1.0)]
    texture = 1.0 + 0.07 * smooth_field(rng, shape, 2.5, 1.0)
    jitter = {key: rng.uniform(0.92, 1.08, 4).astype(np.float32) for _, key, _ in parts}
    weights = [np.clip(ndi.gaussian_filter((labels == lab).astype(np.float32), 0.8), 0, 1) * a
               for lab, _, a in parts]
    total = np.clip(sum(weights), 0, 1)
    for name, img in images.items():
        c = CONTRAST_INDEX[name]
        tumour = sum(w * (APPEARANCE[key][c] * jitter[key][c])
                     for w, (_, key, _) in zip(weights, parts))
        img[...] = img * (1.0 - total) + tumour * texture
