"""indep_seg: segmentation masks learned by composing independent layers.

Dai et al. 2019, "Learning Segmentation Masks with the Independence Prior" and
Zou et al. 2023, "ILSGAN: Independent Layer Synthesis for Unsupervised
Foreground-Background Segmentation", in TensorFlow 2.21 / Keras 3.
"""
__version__ = "0.1.0"
