"""MAC: maximum activations of convolutions, global max pooling of the feature map
(Tolias et al., "Particular object retrieval with integral max-pooling of CNN activations", ICLR 2016)."""

from __future__ import annotations

import torch

from vprlab.models.aggregators._common import GlobalPool
from vprlab.models.spec import AggregatorSpec


class MAC(GlobalPool):
    """Feature map [B, C, H, W] -> L2-normalised spatial maximum [B, C]. No parameters; any spatial size."""

    spec = AggregatorSpec(name="mac", paper="Tolias et al., ICLR 2016", descriptor="channels")

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))
