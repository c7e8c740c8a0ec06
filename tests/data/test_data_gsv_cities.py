from __future__ import annotations

import pytest
import torch
from data_gsv_tree import LAYOUT, pixel_value, write_gsv_tree

from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.data.transforms import train_transform


@pytest.fixture(scope="module")
def gsv_root(tmp_path_factory):
    return write_gsv_tree(tmp_path_factory.mktemp("gsv"))


def _grey_levels(images: torch.Tensor) -> list[int]:
    """Recover each (flat grey, ToTensor'd) image's level."""
    return [int(round(float(img.mean()) * 255)) for img in images]


def test_places_with_too_few_images_are_dropped_and_labels_are_unique_across_cities(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London", "Boston"], img_per_place=4, min_img_per_place=4)
    assert len(ds) == ds.num_places == 4  # London place 2 (2 images) is dropped
    assert ds.num_images == 4 + 4 + 5 + 4
    # the release's convention: second city's place 7 -> 1 * 10**5 + 7
    assert ds.labels.tolist() == [0, 1, 100_000, 100_007]
    assert len(set(ds.labels.tolist())) == ds.num_places
    # place 0 exists in both cities but gets two labels
    assert ds.labels[0] != ds.labels[2]


def test_min_img_per_place_keeps_small_places_when_lowered(gsv_root):
    ds = GSVCitiesDataset(gsv_root, "London", img_per_place=2, min_img_per_place=2)
    assert ds.labels.tolist() == [0, 1, 2]


def test_item_is_k_images_of_one_place_read_from_the_released_file_names(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London", "Boston"], img_per_place=4)
    images, labels = ds[(2, 123)]  # Boston place 0, five images on disk
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.long and labels.tolist() == [100_000] * 4
    levels = _grey_levels(images)
    possible = {pixel_value("Boston", 0, i) for i in range(LAYOUT["Boston"][0])}
    assert len(set(levels)) == 4 and set(levels) <= possible


def test_same_draw_seed_gives_identical_tensors_including_randaugment(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London", "Boston"], transform=train_transform((12, 12)), seed=1)
    a_images, a_labels = ds[(2, 99)]
    torch.manual_seed(12345)  # the global RNG state must not matter
    b_images, b_labels = ds[(2, 99)]
    torch.testing.assert_close(a_images, b_images, rtol=0, atol=0)
    assert torch.equal(a_labels, b_labels)
    # and a different dataset seed draws differently for the same key (some key of several)
    other = GSVCitiesDataset(gsv_root, ["London", "Boston"], transform=train_transform((12, 12)), seed=2)
    assert any(not torch.equal(ds[(2, s)][0], other[(2, s)][0]) for s in range(5))


def test_different_draw_seeds_choose_different_images(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London", "Boston"], img_per_place=4)
    chosen = {tuple(sorted(_grey_levels(ds[(2, seed)][0]))) for seed in range(12)}
    assert len(chosen) > 1  # 5 images, 4 drawn: several subsets must appear


def test_getitem_leaves_the_global_torch_rng_alone(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London"], transform=train_transform((12, 12)))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ds[(0, 5)]
    assert torch.equal(torch.rand(3), expected)


def test_bare_index_draws_from_the_global_rng(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London", "Boston"], transform=train_transform((12, 12)))
    torch.manual_seed(3)
    a = ds[2][0]
    torch.manual_seed(3)
    b = ds[2][0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_cities_none_reads_every_csv(gsv_root):
    ds = GSVCitiesDataset(gsv_root, None)
    assert ds.cities == ["Boston", "London"]  # sorted csv stems


def test_img_per_place_above_min_is_rejected(gsv_root):
    with pytest.raises(ValueError, match="min_img_per_place"):
        GSVCitiesDataset(gsv_root, ["London"], img_per_place=5, min_img_per_place=4)


def test_missing_root_says_how_to_get_the_data(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*make quickstart"):
        GSVCitiesDataset(missing, ["London"])


def test_missing_city_csv_names_the_file_and_the_available_cities(gsv_root):
    with pytest.raises(FileNotFoundError, match=r"Paris\.csv.*Boston.*London"):
        GSVCitiesDataset(gsv_root, ["London", "Paris"])


def test_place_image_paths_point_at_existing_files(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["Boston"])
    paths = ds.place_image_paths(1)
    assert len(paths) == 4 and all(p.endswith(".jpg") for p in paths)
    assert all(p.startswith(str(gsv_root / "Images" / "Boston")) for p in paths)


def test_draft_decoding_reads_jpegs_at_a_reduced_scale_no_smaller_than_asked(tmp_path):
    from PIL import Image

    from vprlab.data.gsv_cities import _load_image

    path = tmp_path / "big.jpg"
    Image.new("RGB", (640, 480), (120, 30, 200)).save(path, quality=90)
    assert _load_image(str(path)).size == (640, 480)
    assert _load_image(str(path), draft_size=(200, 200)).size == (320, 240)  # 1/2: the smallest >= 200x200
    assert _load_image(str(path), draft_size=(100, 150)).size == (160, 120)  # 1/4
    assert _load_image(str(path), draft_size=(480, 640)).size == (640, 480)  # no reduction possible


def test_hidden_csv_files_are_not_cities(tmp_path):
    root = write_gsv_tree(tmp_path / "gsv")
    (root / "Dataframes" / "._London.csv").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (root / "Dataframes" / ".Paris.csv").write_text("not a city\n")
    assert GSVCitiesDataset(root, None).cities == ["Boston", "London"]
    with pytest.raises(FileNotFoundError, match=r"cities available there: \['Boston', 'London'\]"):
        GSVCitiesDataset(root, ["Paris"])
