"""Place sampler and collate function for P x K place batches.

The sampler yields ``(place_index, draw_seed)`` keys for
:class:`vprlab.data.gsv_cities.GSVCitiesDataset`. The order and the draw seeds of an
epoch are a pure function of ``(seed, epoch)``, so resuming at (epoch, item) replays
exactly the batches an uninterrupted run would have seen, with any number of workers.

Use with ``DataLoader(dataset, batch_size=P, sampler=PlaceSampler(...), collate_fn=collate_places)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from vprlab.data.decoding import EncodedBatch, EncodedPlace


class PlaceSampler(Sampler[tuple[int, int]]):
    """Each place once per epoch, in a ``(seed, epoch)``-determined order.

    Call :meth:`set_epoch` before iterating each epoch. :meth:`set_start` skips the first
    ``index`` *places* (not batches: pass ``batches_done * P``) of the next iteration only,
    which is what a mid-epoch resume needs; later epochs start from the beginning again.

    With ``num_replicas > 1`` (DistributedDataParallel) every rank computes the same epoch
    order and takes every ``num_replicas``-th place from position ``rank``, so the ranks see
    disjoint places and each rank's batch stays P places x K images. The order is cut to a
    multiple of ``num_replicas`` so all ranks make the same number of steps.
    """

    def __init__(self, num_places: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        if num_places < 1:
            raise ValueError(f"num_places must be >= 1, got {num_places}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, num_replicas={num_replicas})")
        if num_places < num_replicas:
            raise ValueError(f"{num_places} places cannot be split across {num_replicas} ranks")
        self.num_places = int(num_places)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._start = 0

    @property
    def places_per_rank(self) -> int:
        return self.num_places // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, index: int) -> None:
        if not 0 <= index <= self.places_per_rank:
            raise ValueError(
                f"start index {index} is outside [0, {self.places_per_rank}] (the number of places per epoch)"
            )
        self._start = int(index)

    def epoch_keys(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(place order, draw seeds) of an epoch; both length ``num_places``."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_places) if self.shuffle else np.arange(self.num_places)
        draw_seeds = rng.integers(0, 2**31 - 1, size=self.num_places)
        return order, draw_seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, draw_seeds = self.epoch_keys()
        used = self.places_per_rank * self.num_replicas
        mine = slice(self.rank, used, self.num_replicas)
        order, draw_seeds = order[mine], draw_seeds[mine]
        start, self._start = self._start, 0  # consumed here, at iter() time
        return iter(list(zip(order[start:].tolist(), draw_seeds[start:].tolist())))

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
