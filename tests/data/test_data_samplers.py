from __future__ import annotations

import pytest
import torch
from data_gsv_tree import write_gsv_tree
from torch.utils.data import DataLoader

from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.data.samplers import PlaceSampler, collate_places
from vprlab.data.transforms import train_transform


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


def test_no_shuffle_keeps_the_place_order():
    assert [p for p, _ in PlaceSampler(6, shuffle=False)] == list(range(6))


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
