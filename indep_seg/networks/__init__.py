"""Networks of both papers, one per module; importing this package registers them with Keras.

`Segmenter.load` (and anything else that deserialises a saved `.keras` model) imports this
package first, so a saved UNet or generator loads without the caller importing its module.
"""

from indep_seg.networks import (  # noqa: F401  (registration side effects)
    fused_batch_norm,
    gemm_conv,
    gemm_conv_transpose,
    hoc_discriminator,
    rgba_generator,
    sn_discriminator,
    stylegan2,
    stylegan2_layers,
    unet,
    unfused_bias_conv,
)
