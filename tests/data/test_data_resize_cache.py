"""The resized-image cache keeps the GSV-Cities layout, so the reader takes it unchanged."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.data.resize_cache import resize_tree


def test_resized_copy_reads_as_the_same_dataset(tiny_synthetic, tmp_path):
    dst = tmp_path / "gsv-small"
    written = resize_tree(tiny_synthetic.gsv_root, dst, (24, 32), workers=1)
    original = GSVCitiesDataset(tiny_synthetic.gsv_root, tiny_synthetic.cities)
    cached = GSVCitiesDataset(dst, tiny_synthetic.cities)
    assert written == original.num_images == cached.num_images
    assert cached.num_places == original.num_places and list(cached.labels) == list(original.labels)
    for i in (0, cached.num_places - 1):
        paths = cached.place_image_paths(i)
        assert [os.path.basename(p) for p in paths] == [os.path.basename(p) for p in original.place_image_paths(i)]
        assert Image.open(paths[0]).size == (32, 24)
    # a second run rewrites nothing
    assert resize_tree(tiny_synthetic.gsv_root, dst, (24, 32), workers=1) == 0


def test_not_a_gsv_tree_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"'{tmp_path}' is not a GSV-Cities tree"):
        resize_tree(tmp_path, tmp_path / "out", 32)
