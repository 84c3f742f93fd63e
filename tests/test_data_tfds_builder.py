"""The tfds ImageMaskFolder builder, tested with tfds.testing on dummy data made here (no
downloads)."""

import shutil
import tempfile

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
testing = pytest.importorskip("tensorflow_datasets.testing")

from indep_seg.data import read_image_folder, read_tfds, write_synthetic_dataset  # noqa: E402
from indep_seg.data.tfds_builder import ImageMaskFolder  # noqa: E402


class ImageMaskFolderTest(testing.DatasetBuilderTestCase):
    """tfds' own builder checks: registration, info, splits and example counts, checksums."""

    DATASET_CLASS = ImageMaskFolder
    SPLITS = {"train": 3, "test": 2}
    SKIP_CHECKSUMS = True

    @classmethod
    def setUpClass(cls):
        cls._dummy_root = tempfile.mkdtemp(prefix="image_mask_folder_dummy_")
        write_synthetic_dataset(f"{cls._dummy_root}/train", num_images=3, seed=0, size=32)
        write_synthetic_dataset(f"{cls._dummy_root}/test", num_images=2, seed=1, size=32)
        cls.EXAMPLE_DIR = cls._dummy_root
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._dummy_root, ignore_errors=True)


def test_read_tfds_gives_the_same_elements_as_the_folder_reader(tmp_path):
    write_synthetic_dataset(tmp_path / "manual", num_images=4, seed=2, size=40)
    ds = read_tfds(
        "image_mask_folder",
        split="train",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=tmp_path / "manual",
    )
    got = sorted(ds.as_numpy_iterator(), key=lambda e: e["source_id"])
    ref = list(
        read_image_folder(
            tmp_path / "manual" / "images",
            tmp_path / "manual" / "boxes.csv",
            tmp_path / "manual" / "masks",
        ).as_numpy_iterator()
    )
    assert len(got) == 4
    for a, b in zip(got, ref):
        assert a["source_id"] == b["source_id"] and a["has_mask"]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
    # Prepared once: a second read needs no manual_dir.
    again = read_tfds("image_mask_folder", split="train", data_dir=str(tmp_path / "tfds"))
    assert len(list(again)) == 4
