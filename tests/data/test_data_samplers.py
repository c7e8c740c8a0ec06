from __future__ import annotations

import itertools
import re
from collections import Counter

import numpy as np
import pytest
import torch
from data_gsv_tree import pixel_value, write_gsv_tree
from torch.utils.data import DataLoader

from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.data.loaders import build_train_loader
from vprlab.data.samplers import PlaceSampler, collate_places
from vprlab.data.transforms import train_transform
from vprlab.utils.errors import ConfigError


def _epoch(sampler: PlaceSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_each_place_once_per_epoch_in_an_order_that_changes_with_the_epoch():
    sampler = PlaceSampler(50, seed=3)
    e0, e1 = _epoch(sampler, 0), _epoch(sampler, 1)
    assert sorted(p for p, _ in e0) == list(range(50)) == sorted(p for p, _ in e1)
    assert [p for p, _ in e0] != [p for p, _ in e1]
    assert [s for _, s in e0] != [s for _, s in e1]  # fresh draw seeds each epoch too


def test_order_and_draw_seeds_are_a_pure_function_of_seed_and_epoch():
    assert _epoch(PlaceSampler(30, seed=1), 4) == _epoch(PlaceSampler(30, seed=1), 4)
    assert _epoch(PlaceSampler(30, seed=1), 4) != _epoch(PlaceSampler(30, seed=2), 4)
    sampler = PlaceSampler(30, seed=1)
    first = _epoch(sampler, 4)
    _epoch(sampler, 5)
    assert _epoch(sampler, 4) == first


def test_set_start_skips_items_for_one_iteration_only():
    sampler = PlaceSampler(20, seed=0)
    full = _epoch(sampler, 2)
    sampler.set_start(7)
    assert len(sampler) == 13
    assert list(sampler) == full[7:]
    assert len(sampler) == 20 and list(sampler) == full  # consumed
    sampler.set_start(20)
    assert list(sampler) == []


def test_set_start_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="start index 21"):
        PlaceSampler(20).set_start(21)


# Five cities of uneven size (the fourth has one place), places stored city by city as the dataset stores them.
CITY_SIZES = [7, 3, 11, 1, 6]
CITIES = np.repeat(np.arange(len(CITY_SIZES)), CITY_SIZES)


def _batches(sampler: PlaceSampler, epoch: int) -> list[list[int]]:
    """The places of each batch a DataLoader with batch_size=P cuts from the sampler's sequence."""
    places = [p for p, _ in _epoch(sampler, epoch)]
    return [places[i:i + sampler.batch_size] for i in range(0, len(places), sampler.batch_size)]


def _mixed(batches: list[list[int]], cities=CITIES) -> int:
    return sum(len({int(cities[p]) for p in batch}) > 1 for batch in batches)


def test_city_order_takes_the_cities_in_turn_each_shuffled_within_every_epoch():
    sampler = PlaceSampler(len(CITIES), seed=4, cities=CITIES, batch_size=4)
    e0, e1 = [p for p, _ in _epoch(sampler, 0)], [p for p, _ in _epoch(sampler, 1)]
    for places in (e0, e1):
        assert sorted(places) == list(range(len(CITIES)))  # each place once, the last batch kept
        assert CITIES[places].tolist() == CITIES.tolist()  # the cities one after the other, in index order
    assert e0 != e1
    for city in range(len(CITY_SIZES)):
        if CITY_SIZES[city] > 2:
            assert [p for p in e0 if CITIES[p] == city] != [p for p in e1 if CITIES[p] == city]


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("places_per_batch", [2, 3, 5, 8])
@pytest.mark.parametrize("num_replicas", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_city_batches_mix_at_most_cities_minus_one_times_per_epoch(seed, places_per_batch, num_replicas, drop_last):
    ranks = [PlaceSampler(len(CITIES), seed=seed, cities=CITIES, batch_size=places_per_batch, drop_last=drop_last,
                          num_replicas=num_replicas, rank=r) for r in range(num_replicas)]
    for epoch in range(3):
        batches = [_batches(sampler, epoch) for sampler in ranks]
        assert len({len(b) for b in batches}) == 1  # every rank makes the same number of steps
        assert sum(_mixed(b) for b in batches) <= len(CITY_SIZES) - 1
        places = [p for b in batches for batch in b for p in batch]
        assert len(places) == len(set(places))  # the ranks' places are disjoint
        sizes = [len(batch) for b in batches for batch in b]
        assert sizes.count(places_per_batch) >= len(sizes) - 1  # at most the epoch's last batch is smaller
        if drop_last:
            assert set(sizes) == {places_per_batch}
        # A global step covers num_replicas * P consecutive places of the one city-ordered sequence.
        sequence = [p for p, _ in _epoch(PlaceSampler(len(CITIES), seed=seed, cities=CITIES), epoch)]
        for step in range(len(batches[0])):
            together = sorted(p for b in batches for p in b[step])
            start = step * num_replicas * places_per_batch
            assert together == sorted(sequence[start:start + len(together)])


def test_shuffled_order_mixes_the_cities():
    sampler = PlaceSampler(len(CITIES), seed=0, batch_order="shuffled", cities=CITIES, batch_size=4)
    for epoch in range(3):
        batches = _batches(sampler, epoch)
        assert sorted(p for b in batches for p in b) == list(range(len(CITIES)))
        assert _mixed(batches) > len(CITY_SIZES) - 1


def test_places_come_in_the_order_of_their_first_image_in_a_shuffled_city_as_the_originals_take_them():
    """The originals shuffle a city's rows (images) and take ``pd.unique`` of their place ids: place i
    comes first with probability n_i / sum(n), then the next among the others with n_j / (their sum), ...
    (the first of the remaining rows is uniform among them)."""
    counts = np.array([1, 2, 5])
    sampler = PlaceSampler(3, seed=11, image_counts=counts)
    epochs = 6000
    seen = Counter(tuple(sampler.epoch_keys(e)[0].tolist()) for e in range(epochs))
    for order in itertools.permutations(range(3)):
        i, j, _ = order
        expected = counts[i] / counts.sum() * counts[j] / (counts.sum() - counts[i])
        assert abs(seen[order] / epochs - expected) < 0.025, (order, seen[order] / epochs, expected)
    # Without counts: uniform within the city.
    uniform = Counter(tuple(PlaceSampler(3, seed=11).epoch_keys(e)[0].tolist()) for e in range(epochs))
    assert all(abs(uniform[o] / epochs - 1 / 6) < 0.025 for o in itertools.permutations(range(3)))


def test_resuming_mid_epoch_continues_every_rank_exactly():
    for rank in range(2):
        make = lambda: PlaceSampler(len(CITIES), seed=3, cities=CITIES, batch_size=3, num_replicas=2, rank=rank)  # noqa: E731
        full = _epoch(make(), 5)
        for done in range(len(full) // 3 + 1):
            resumed = make()
            resumed.set_epoch(5)
            resumed.set_start(done * 3)
            assert len(resumed) == len(full) - done * 3
            assert list(resumed) == full[done * 3:]


def test_set_start_must_be_whole_batches():
    sampler = PlaceSampler(len(CITIES), cities=CITIES, batch_size=4)
    with pytest.raises(ValueError, match="not a whole number of batches of 4"):
        sampler.set_start(6)


def test_too_few_batches_for_the_ranks_are_rejected():
    with pytest.raises(ValueError, match="make 2 batches of 5, fewer than the 3 ranks"):
        PlaceSampler(10, batch_size=5, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="batch_order='random'"):
        PlaceSampler(10, batch_order="random")


def test_collate_concatenates_places_keeping_each_place_consecutive():
    batch = [(torch.full((3, 3, 2, 2), float(i)), torch.full((3,), i, dtype=torch.long)) for i in range(4)]
    images, labels = collate_places(batch)
    assert images.shape == (12, 3, 2, 2)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert torch.equal(images[:, 0, 0, 0].long(), labels)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_gsv_tree(tmp_path_factory.mktemp("gsv_sampler"), size=12)
    return GSVCitiesDataset(root, ["London", "Boston"], img_per_place=4, transform=train_transform((8, 8)))


def _loader(dataset, sampler, places_per_batch=2):
    return DataLoader(dataset, batch_size=places_per_batch, sampler=sampler, collate_fn=collate_places, num_workers=0)


def test_dataloader_yields_p_times_k_batches_of_whole_places(dataset):
    sampler = PlaceSampler(len(dataset), seed=0)
    batches = list(_loader(dataset, sampler))
    assert len(batches) == 2
    for images, labels in batches:
        assert images.shape == (2 * 4, 3, 8, 8)
        groups = labels.view(2, 4)
        assert (groups == groups[:, :1]).all() and groups[0, 0] != groups[1, 0]


def test_resuming_mid_epoch_replays_the_remaining_batches_exactly(dataset):
    sampler = PlaceSampler(len(dataset), seed=5)
    sampler.set_epoch(1)
    full = list(_loader(dataset, sampler))
    resumed_sampler = PlaceSampler(len(dataset), seed=5)
    resumed_sampler.set_epoch(1)
    resumed_sampler.set_start(2)  # one batch of P=2 places already done
    resumed = list(_loader(dataset, resumed_sampler))
    assert len(resumed) == 1
    torch.testing.assert_close(resumed[0][0], full[1][0], rtol=0, atol=0)
    assert torch.equal(resumed[0][1], full[1][1])


# Four cities in a configured order that is not alphabetical; uneven sizes and image counts (Lima place 3 is
# dropped at min_img_per_place=4).
MULTI_CITY = {
    "Rome": {i: 4 + i % 3 for i in range(7)},
    "Boston": {0: 5, 4: 4, 9: 6},
    "Athens": {i: 4 + i % 2 for i in range(9)},
    "Lima": {0: 4, 1: 4, 2: 5, 3: 2, 4: 4},
}


@pytest.fixture(scope="module")
def multi_city_root(tmp_path_factory):
    return write_gsv_tree(tmp_path_factory.mktemp("gsv_multi_city"), size=8, layout=MULTI_CITY)


def _train_loader(root, **settings):
    cfg = {"_target_": "vprlab.data.gsv_cities.GSVCitiesDataset", "root": str(root), "cities": list(MULTI_CITY),
           "img_per_place": 4, "min_img_per_place": 4, "image_size": [8, 8], "num_workers": 0,
           "persistent_workers": False, "pin_memory": False, "randaugment_ops": 0, **settings}
    return build_train_loader(cfg, mean=[0.5] * 3, std=[0.5] * 3, seed=settings.pop("seed", 0))


def _label_batches(loader, sampler, epoch: int) -> list[list[tuple[str, int]]]:
    """(city, place_id) of the places of every batch, read from the labels and the csv files."""
    sampler.set_epoch(epoch)
    batches = []
    for _, labels in loader:
        places = labels.view(-1, 4)
        assert (places == places[:, :1]).all()  # K consecutive images of one place
        # label = index of the city in the configured list * 10**5 + its place_id (the release's convention)
        batches.append([(list(MULTI_CITY)[int(label) // 10**5], int(label) % 10**5) for label in places[:, 0]])
    return batches


@pytest.mark.parametrize("places_per_batch", [2, 3, 4, 7])
@pytest.mark.parametrize("seed", [0, 5])
def test_the_train_loader_builds_city_batches_from_the_dataset(multi_city_root, places_per_batch, seed):
    loader, sampler, dataset = _train_loader(multi_city_root, places_per_batch=places_per_batch, seed=seed)
    kept = {(city, place) for city, places in MULTI_CITY.items() for place, n in places.items() if n >= 4}
    cities = list(MULTI_CITY)
    for epoch in range(2):
        batches = _label_batches(loader, sampler, epoch)
        assert len(batches) == len(loader) == -(-len(kept) // places_per_batch)  # the last, smaller batch kept
        places = [p for b in batches for p in b]
        assert sorted(places) == sorted(kept)  # every place once, as the csv files list them
        assert [cities.index(c) for c, _ in places] == sorted(cities.index(c) for c, _ in places)
        assert sum(len({c for c, _ in b}) > 1 for b in batches) <= len(cities) - 1


def test_the_train_loader_shuffles_all_places_and_drops_the_last_batch_when_asked(multi_city_root):
    loader, sampler, _ = _train_loader(multi_city_root, places_per_batch=4, batch_order="shuffled", drop_last=True)
    batches = _label_batches(loader, sampler, 0)
    assert len(batches) == 22 // 4 and all(len(b) == 4 for b in batches)
    assert sum(len({c for c, _ in b}) > 1 for b in batches) > len(MULTI_CITY) - 1


@pytest.mark.parametrize("setting, message", [({"batch_order": "random"}, "dataset.batch_order='random'"),
                                              ({"drop_last": "no"}, "dataset.drop_last='no'")])
def test_the_train_loader_refuses_an_unknown_batch_setting(multi_city_root, setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _train_loader(multi_city_root, places_per_batch=4, **setting)


def test_the_k_images_of_a_place_are_redrawn_every_epoch(tmp_path):
    root = write_gsv_tree(tmp_path / "gsv", size=8)
    dataset = GSVCitiesDataset(root, ["London", "Boston"], img_per_place=4)  # Boston place 0 has 5 images
    place = int(np.flatnonzero(dataset.labels == 10**5 + 0)[0])
    sampler = PlaceSampler(len(dataset), seed=2, cities=dataset.place_cities, image_counts=dataset.place_image_counts)
    expected = {round(pixel_value("Boston", 0, i)) for i in range(5)}
    draws = []
    for epoch in range(8):
        key = next(k for k in _epoch(sampler, epoch) if k[0] == place)
        images, _ = dataset[key]
        drawn = frozenset(round(float(v) * 255) for v in images.mean(dim=(1, 2, 3)))
        assert len(drawn) == 4 and drawn <= expected
        draws.append(drawn)
    assert len(set(draws)) > 1
