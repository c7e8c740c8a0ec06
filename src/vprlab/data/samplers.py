"""Place sampler and collate function for P x K place batches.

The sampler yields ``(place_index, draw_seed)`` keys for
:class:`vprlab.data.gsv_cities.GSVCitiesDataset`. The order and the draw seeds of an
epoch are a pure function of ``(seed, epoch)``, so resuming at (epoch, item) replays
exactly the batches an uninterrupted run would have seen, with any number of workers.

Batch order (``batch_order``), see docs/training.md#batches:

- ``city`` (the GSV-Cities recipe: gsv-cities, MixVPR, SALAD, Bag-of-Queries, OpenVPRLab): the places
  of each city in a fresh random order every epoch, the cities one after the other in their
  configured order, batches cut in turn from that sequence. A batch holds places of one city, except
  at most ``cities - 1`` batches per epoch that straddle two neighbouring cities.
- ``shuffled``: one uniform random order of all places (gsv-cities' ``shuffle_all=True``).

Use with ``DataLoader(dataset, batch_size=P, sampler=PlaceSampler(..., batch_size=P), collate_fn=collate_places)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from vprlab.data.decoding import EncodedBatch, EncodedPlace

BATCH_ORDERS = ("city", "shuffled")


class PlaceSampler(Sampler[tuple[int, int]]):
    """Each place at most once per epoch, in a ``(seed, epoch)``-determined order, cut into batches.

    Args:
        num_places: places in the dataset.
        seed: with the epoch, determines the order and every place's draw seed.
        batch_order: ``city`` or ``shuffled`` (module docstring).
        cities: city index of every place (``city`` order; ``None``: one city). Cities come in
            increasing index order, i.e. the dataset's ``cities`` list order.
        image_counts: images of every place. The originals shuffle a city's *images* and take the
            places in the order their first image appears (``pd.unique`` of the shuffled rows), so a
            place with more images tends to come earlier; with the counts, the ``city`` order draws
            from exactly that distribution. ``None``: a uniform order within each city.
        batch_size: P, the places per batch of the DataLoader this sampler feeds.
        drop_last: drop the epoch's last batch when it has fewer than P places (the originals keep it).
        num_replicas, rank: DistributedDataParallel.

    Every rank computes the same epoch sequence and cuts it into consecutive batches of P places;
    batch ``i`` goes to rank ``i % num_replicas``. Each rank's batch is therefore P consecutive
    places of the city-ordered sequence (single-city but for the straddles), the ranks' places are
    disjoint, and a global step covers ``num_replicas * P`` consecutive places, as one process with
    that batch would. The batches are cut to a multiple of ``num_replicas``, so all ranks make the
    same number of steps.

    Call :meth:`set_epoch` before iterating each epoch. :meth:`set_start` skips the first
    ``index`` places of this rank (a multiple of P: pass ``batches_done * P``) of the next
    iteration only, which is what a mid-epoch resume needs; later epochs start from the beginning.
    """

    def __init__(
        self, num_places: int, seed: int = 0, *, batch_order: str = "city", cities: Sequence[int] | np.ndarray | None = None,
        image_counts: Sequence[int] | np.ndarray | None = None, batch_size: int = 1, drop_last: bool = False,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        if num_places < 1:
            raise ValueError(f"num_places must be >= 1, got {num_places}")
        if batch_order not in BATCH_ORDERS:
            raise ValueError(f"batch_order={batch_order!r}; use one of {BATCH_ORDERS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, num_replicas={num_replicas})")
        self.cities = np.zeros(num_places, np.int64) if cities is None else np.asarray(cities, np.int64)
        self.image_counts = None if image_counts is None else np.asarray(image_counts, np.float64)
        for name, values in (("cities", self.cities), ("image_counts", self.image_counts)):
            if values is not None and values.shape != (num_places,):
                raise ValueError(f"{name} has shape {values.shape}; expected one value per place ({num_places},)")
        if self.image_counts is not None and (self.image_counts < 1).any():
            raise ValueError("image_counts must all be >= 1")
        self.num_places = int(num_places)
        self.seed = int(seed)
        self.batch_order = batch_order
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._start = 0
        batches = -(-self.num_places // self.batch_size) if not drop_last else self.num_places // self.batch_size
        self.batches_per_rank = batches // self.num_replicas
        if self.batches_per_rank == 0:
            raise ValueError(
                f"{num_places} places make {batches} batches of {batch_size}"
                f"{' (the last one dropped)' if drop_last and num_places % batch_size else ''}, "
                f"fewer than the {num_replicas} ranks"
            )
        # Positions (in the epoch sequence) this rank reads: its batches, one after the other.
        used = np.arange(self.batches_per_rank * self.num_replicas)[self.rank::self.num_replicas]
        positions = (used[:, None] * self.batch_size + np.arange(self.batch_size)).ravel()
        self._positions = positions[positions < self.num_places]

    @property
    def places_per_rank(self) -> int:
        return len(self._positions)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, index: int) -> None:
        if not 0 <= index <= self.places_per_rank:
            raise ValueError(
                f"start index {index} is outside [0, {self.places_per_rank}] (the number of places per epoch)"
            )
        if index % self.batch_size and index != self.places_per_rank:
            raise ValueError(f"start index {index} is not a whole number of batches of {self.batch_size} places")
        self._start = int(index)

    def epoch_keys(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(place sequence, draw seeds) of an epoch for all ranks together; both length ``num_places``."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        if self.batch_order == "shuffled":
            order = rng.permutation(self.num_places)
        else:
            # A place's first image in a uniformly shuffled list of the city's n images sits at the
            # minimum of n uniform positions; ordering by that minimum is ordering by the maximum
            # u ** (1 / n) of the complements, largest first. Without counts: a uniform order.
            u = rng.random(self.num_places)
            key = u if self.image_counts is None else u ** (1.0 / self.image_counts)
            order = np.lexsort((-key, self.cities))  # cities in index order, then key descending
        draw_seeds = rng.integers(0, 2**31 - 1, size=self.num_places)
        return order, draw_seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, draw_seeds = self.epoch_keys()
        start, self._start = self._start, 0  # consumed here, at iter() time
        mine = self._positions[start:]
        return iter(list(zip(order[mine].tolist(), draw_seeds[mine].tolist())))

    def __len__(self) -> int:
        return self.places_per_rank - self._start


def collate_places(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor | EncodedBatch, torch.Tensor]:
    """P items of (images [K,3,H,W], labels [K]) -> (images [P*K,3,H,W], labels [P*K]).

    The K images of a place stay consecutive, which the place-batch losses and miners rely on.
    """
    images, labels = zip(*batch)
    if isinstance(images[0], EncodedPlace):  # dataset.decoder=device: decoded by ``.to(device)``
        return EncodedBatch(list(images)), torch.cat(labels, dim=0)
    return torch.cat(images, dim=0), torch.cat(labels, dim=0)
