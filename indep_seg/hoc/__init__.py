"""One image of a dense homogeneous object cluster (Dai et al. 2019, application 2), plus counting.

- `load_image` (`indep_seg.imageio`): any 8/16-bit grayscale / RGB / RGBA file -> float32 RGB in [0,
1].
- `estimate.estimate_from_image`: window, instance size, coverage, density, a, layers, padding and
  background provider estimated from the image (Otsu + connected components), all overridable.
- `patches`: patch extraction (window -> resolution, flips), the disk and inpainted backgrounds.
- `counting`: the centre-heatmap counter trained on the generator's own composites.
"""

from indep_seg.hoc.estimate import ImageEstimate, estimate_from_image, otsu_threshold  # noqa: F401
from indep_seg.hoc.patches import (  # noqa: F401
    disk_background,
    extract_patches,
    inpaint_background,
    rescale_image,
)
from indep_seg.imageio import load_image  # noqa: F401  (re-exported; its home is indep_seg.imageio)
