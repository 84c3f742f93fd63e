"""indep_seg: segmentation masks learned without pixel labels, from composites of independent
layers."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tensorboard==2.21.0",
    "tensorflow-datasets==4.9.10",
    "tensorflow-serving-api==2.21.0",
    "grpcio==1.85.1",
    "grpcio-health-checking==1.85.1",
    "h11>=0.16,<1",  # the REST server's HTTP/1.1 framing (serving/rest.py)
    "tf2onnx==1.17.0",
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
    "numpy>=2.0,<3",
    "scipy>=1.13,<2",
    "scikit-image>=0.22",  # the marker watershed of the nucleus instance maps (hoc/instances.py)
    "opencv-python-headless>=4.9",  # GrabCut: the per-image box prior and mask refinement
    "pillow>=10,<14",
    "pyyaml>=6,<7",
    "tqdm>=4.66,<5",
    "psutil>=5.9,<8",
    "importlib_resources>=6",  # tfds download_and_prepare, even for local builders
]

# Layers above the core, kept as top-level folders of the repository (see docs/ARCHITECTURE.md).
LAYERS = ("training", "serving", "tfrecords_tools")

EXTRAS = {
    "test": [
        "pytest>=8,<10",
        "pytest-xdist>=3.5,<4",  # the README's test command runs one process per core (-n auto)
        "hypothesis>=6.100,<7",
        "opencv-python-headless>=4.9",
        "dill>=0.3",
        "ruff==0.17.6",
    ],  # `ruff check .` runs in .ci/run (configuration: pyproject.toml)
}
EXTRAS["dev"] = EXTRAS["test"]

setup(
    name="indep_seg",
    version="0.1.0",
    description=(
        "Learning segmentation masks with the independence prior (Dai et al. 2019) and "
        "ILSGAN (Zou et al. 2023) in TensorFlow / Keras 3, with TF-Serving-compatible serving and "
        "ONNX export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",  # the code; the data sets keep their own terms (docs/DATA_LICENSES.md)
    license_files=["LICENSE"],
    python_requires=">=3.10,<3.13",
    # The repository keeps the layers as top-level folders; installed, they live under `indep_seg`
    # (indep_seg.training, indep_seg.serving, indep_seg.tfrecords_tools), so nothing generic
    # lands in site-packages.
    packages=find_packages(include=["indep_seg", "indep_seg.*"])
    + [
        f"indep_seg.{layer}{sub}"
        for layer in LAYERS
        for sub in [""] + ["." + p for p in find_packages(where=layer)]
    ],
    package_dir={f"indep_seg.{layer}": layer for layer in LAYERS},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["indep-seg=indep_seg.cli:main"]},
)
