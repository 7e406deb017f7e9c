"""experiments.asymmetry_cue: the mirror axis of a shifted symmetric head is found, and the
asymmetry cue ranks a one-sided lesion above the rest of the head."""
import numpy as np

from experiments.asymmetry_cue import cues, mirror, mirror_axes
from experiments.map_ceiling import slice_scores


def test_mirror_axis_is_found_and_a_one_sided_lesion_stands_out():
    yy, xx = np.mgrid[:64, :64]
    head = ((yy - 32) / 26) ** 2 + ((xx - 35) / 20) ** 2 < 1  # symmetric about column 35
    x = np.where(head, 1.0 + 0.5 * np.cos((xx - 35) / 3.0), 0.0).astype(np.float32)
    np.testing.assert_allclose(mirror(x, 70), x)  # axis2 = 2 x 35: the mirror is the image
    lesion = ((yy - 30) ** 2 + (xx - 45) ** 2) < 16
    x = x + np.where(lesion, 1.0, 0.0).astype(np.float32)
    box, fit = mirror_axes(x, head)
    assert box == 70 and fit == 70
    scores = slice_scores(cues(x, head)["asym_fit"], lesion, head)
    assert scores["auroc"] > 0.9
