"""Healthy anatomy of the phantom: MNI ICBM152 2009a templates warped per subject.

Grid and orientation
--------------------
Output volumes live on the BraTS 2020 grid, ``(X, Y, Z) = (240, 240, 155)`` voxels of 1 mm, with
the affine BraTS files have when read by nibabel, ``diag(-1, -1, 1)`` plus an offset (voxel axes
L, P, S). The nilearn templates are ``(197, 233, 189)`` voxels of 1 mm in RAS voxel order, so the
map from an output voxel to a template voxel flips X and Y; it is composed with a per-subject
affine (scale, rotation, translation), a smooth elastic displacement and, optionally, a radial
push around the tumour (mass effect).

All heavy work is done inside the brain's bounding box on the output grid (``Box``) and smooth
random fields are drawn on coarse grids and up-sampled, which keeps a subject at seconds per core.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: the BraTS 2020 grid, voxels of 1 mm
GRID: tuple[int, int, int] = (240, 240, 155)
#: the affine of BraTS 2020 files as nibabel reads them (LPS voxel axes)
BRATS_AFFINE: np.ndarray = np.array([[-1.0, 0.0, 0.0, 0.0],
                                     [0.0, -1.0, 0.0, 239.0],
                                     [0.0, 0.0, 1.0, 0.0],
                                     [0.0, 0.0, 0.0, 1.0]])
#: the MNI152 brain is larger than a typical patient brain and would not fit 155 slices once
#: scaled up by 8 %; every subject is first shrunk by this factor
BASE_SCALE = 0.88
#: output voxel (x, y, z) onto which the centre of the template brain's bounding box is mapped;
#: below the grid's centre because the template's lowest slices are brain stem, which BraTS
#: volumes often cut, while the vertex must stay inside
OUT_CENTRE = np.array([119.5, 119.5, 69.0])
#: output voxel axes are L, P, S; template voxel axes are R, A, S
FLIP = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Template:
    """Template arrays, ``(197, 233, 189)`` float32 in template voxel order.

    ``t1`` in [0, 1]; ``gm``/``wm`` probabilities, zero outside ``brain``; ``brain`` in {0, 1}.
    ``centre``: centre of the brain's bounding box, template voxels. ``half``: its half extent.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    centre: np.ndarray
    half: np.ndarray


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The nilearn MNI152 templates (shipped in the wheel, no download), cached per process."""
    from nilearn import datasets

    def arr(img):
        return np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)

    brain = (arr(datasets.load_mni152_brain_mask(resolution=1)) > 0).astype(np.float32)
    gm = arr(datasets.load_mni152_gm_template(resolution=1)) * brain
    wm = arr(datasets.load_mni152_wm_template(resolution=1)) * brain
    t1 = arr(datasets.load_mni152_template(resolution=1)) * brain
    idx = np.nonzero(brain)
    lo = np.array([i.min() for i in idx], float)
    hi = np.array([i.max() for i in idx], float)
    return Template(t1=t1, gm=gm, wm=wm, brain=brain, centre=(lo + hi) / 2, half=(hi - lo) / 2)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], step: float,
                 sigma: float = 1.0) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation, float32 ``shape``.

    White noise on a grid coarser by ``step`` voxels is Gaussian-smoothed (``sigma`` coarse
    voxels) and up-sampled linearly: the correlation length is about ``step * sigma`` voxels.
    """
    coarse = tuple(max(2, int(np.ceil(s / step)) + 1) for s in shape)
    noise = ndi.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma,
                                mode="wrap")
    noise -= noise.mean()
    noise /= noise.std() + 1e-8
    return upsample(noise, shape)


def upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear up-sampling of ``coarse`` so that its corners land on the corners of ``shape``."""
    coords = np.ogrid[tuple(slice(0, c - 1, complex(0, s)) for c, s in zip(coarse.shape, shape))]
    # separable linear interpolation: one axis at a time is far cheaper than map_coordinates
    out = coarse
    for axis, c in enumerate(coords):
        c = c.ravel()
        i0 = np.clip(np.floor(c).astype(int), 0, coarse.shape[axis] - 2)
        w = (c - i0).astype(np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        wshape = [1] * out.ndim
        wshape[axis] = -1
        w = w.reshape(wshape)
        out = a + (b - a) * w
    return out.astype(np.float32, copy=False)


@dataclass
class Pose:
    """Per-subject linear map: ``template voxel = matrix @ (out voxel - OUT_CENTRE) + centre``."""

    matrix: np.ndarray  # (3, 3), includes the L/P flip and the inverse scale/rotation
    offset: np.ndarray  # (3,), template voxel of OUT_CENTRE


def random_pose(rng: np.random.Generator, tpl: Template) -> Pose:
    """Scale ±8 %, rotation ±8° about each axis, translation ±6 mm (uniform)."""
    scale = BASE_SCALE * rng.uniform(0.92, 1.08, 3)
    angles = np.deg2rad(rng.uniform(-8, 8, 3))
    shift = rng.uniform(-6, 6, 3)
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    forward = rot @ np.diag(scale)  # template mm -> output mm, about the centres
    matrix = FLIP @ np.linalg.inv(forward)
    return Pose(matrix=matrix, offset=tpl.centre - matrix @ shift)


def brain_box(pose: Pose, tpl: Template, margin: int = 12) -> tuple[slice, slice, slice]:
    """Output-grid box that holds the warped brain (bounding box of the mapped template box)."""
    inv = np.linalg.inv(pose.matrix)
    corners = np.array(np.meshgrid(*[[-1, 1]] * 3, indexing="ij")).reshape(3, -1).T * tpl.half
    out = (inv @ (corners + tpl.centre - pose.offset).T).T + OUT_CENTRE
    lo = np.maximum(np.floor(out.min(0)) - margin, 0).astype(int)
    hi = np.minimum(np.ceil(out.max(0)) + margin + 1, GRID).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def source_coords(pose: Pose, box: tuple[slice, slice, slice],
                  displacement: np.ndarray) -> np.ndarray:
    """Template voxel coordinates ``(3, *box_shape)`` float32 of every output voxel in ``box``.

    ``displacement``: ``(3, *box_shape)`` in output voxels (elastic + mass effect), added
    before the linear map.
    """
    grid = np.ogrid[tuple(slice(s.start, s.stop) for s in box)]
    rel = [(g - c).astype(np.float32) for g, c in zip(grid, OUT_CENTRE)]
    m = pose.matrix.astype(np.float32)
    out = np.empty((3, *displacement.shape[1:]), np.float32)
    for k in range(3):
        out[k] = pose.offset[k]
        for j in range(3):
            out[k] += m[k, j] * (rel[j] + displacement[j])
    return out


def warp(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear sampling of a template volume at ``coords`` (zero outside)."""
    return ndi.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0,
                               output=np.float32)


#: relative tissue intensities (WM, GM, CSF) per contrast before per-subject jitter; WM of T1 = 1.
#: T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF suppressed, GM >= WM; T1CE ~ T1.
TISSUE = {
    "t1": (1.00, 0.70, 0.28),
    "t1ce": (1.00, 0.72, 0.30),
    "t2": (0.45, 0.62, 1.00),
    "flair": (0.60, 0.76, 0.12),
}


def healthy_intensities(rng: np.random.Generator, gm: np.ndarray, wm: np.ndarray,
                        csf: np.ndarray, t1_template: np.ndarray,
                        brain: np.ndarray) -> dict[str, np.ndarray]:
    """Noise-free relative intensities per contrast from tissue fractions (each ``box_shape``).

    The template T1's residual (what the three tissue classes do not explain: deep grey nuclei,
    small sulci) is added to T1/T1CE and subtracted, weaker, from T2/FLAIR for texture.
    """
    model = 0.87 * wm + 0.65 * gm + 0.31 * csf
    residual = (t1_template - model) * brain
    out = {}
    for name, (w, g, c) in TISSUE.items():
        # plain floats: NumPy scalars would promote the float32 maps to float64
        jw, jg, jc = (float(v) for v in np.array([w, g, c]) * rng.uniform(0.93, 1.07, 3))
        # keep the documented orderings whatever the jitter
        if name in ("t1", "t1ce"):
            jg = min(jg, 0.9 * jw)
            jc = min(jc, 0.6 * jg)
        elif name == "t2":
            jg = max(jg, 1.15 * jw)
            jc = max(jc, 1.3 * jg)
        else:
            jg = max(jg, 1.05 * jw)
            jc = min(jc, 0.3 * jw)
        sign = 1.0 if name in ("t1", "t1ce") else -0.5
        out[name] = jw * wm + jg * gm + jc * csf + sign * residual
    return out


def contrast_enhancement(rng: np.random.Generator, csf: np.ndarray, depth: np.ndarray,
                         edge: np.ndarray) -> np.ndarray:
    """Relative T1CE gain of choroid plexus (deep CSF) and cortical vessels (brain edge)."""
    shape = csf.shape
    blobs = smooth_field(rng, shape, 3.0, 1.0)
    vessels = smooth_field(rng, shape, 2.0, 1.0)
    plexus = np.clip(blobs - 1.2, 0, None) * (csf > 0.5) * (depth > 0.9)
    surface = np.clip(vessels - 1.6, 0, None) * edge
    return (1.5 * plexus + 1.0 * surface).astype(np.float32)
