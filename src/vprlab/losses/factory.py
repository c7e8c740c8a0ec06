"""The training loss from two config groups: ``loss`` (what is minimised) and ``miner``
(which pairs or triplets of the batch it is computed on)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_metric_learning import losses
from torch import nn

from vprlab.losses.metric import MinedMetricLoss
from vprlab.utils.instantiate import build

# pytorch-metric-learning losses that refuse an indices_tuple (their compute_loss calls
# c_f.indices_tuple_not_supported), so they cannot be given a miner's pairs or triplets.
# tests/losses checks this list against the installed library.
MINER_FREE_LOSSES: tuple[str, ...] = ("InstanceLoss", "P2SGradLoss", "PNPLoss", "RankedListLoss", "VICRegLoss")


def _target(cfg: Any) -> str:
    return str(cfg.get("_target_", "?")) if isinstance(cfg, (dict, DictConfig)) else "?"


def _is_empty(cfg: Any) -> bool:
    return cfg is None or (isinstance(cfg, (dict, DictConfig)) and len(cfg) == 0)


def build_loss(loss_cfg: DictConfig | dict, miner_cfg: DictConfig | dict | None = None) -> MinedMetricLoss:
    """``MinedMetricLoss(loss, miner)`` from the ``loss`` and ``miner`` groups.

    ``miner_cfg`` None (``miner=none``, or a stored config from before the miner group) means
    no miner. A loss config whose target already returns a ``MinedMetricLoss`` (the old
    ``vprlab.losses.multi_similarity`` with ``miner_epsilon``, as stored by earlier runs) is
    built as it was, and is an error together with a miner, which would choose a second one.
    """
    if isinstance(loss_cfg, dict):
        loss_cfg = OmegaConf.create(loss_cfg)
    loss = build(loss_cfg)
    miner = None if _is_empty(miner_cfg) else build(miner_cfg)
    if isinstance(loss, MinedMetricLoss):  # a config from before the miner group
        if miner is not None:
            raise ValueError(
                f"loss group ({_target(loss_cfg)}) already chooses its miner (loss.miner_epsilon="
                f"{loss_cfg.get('miner_epsilon')}), and the miner group ({_target(miner_cfg)}) would add a "
                "second one: use loss=multi_similarity miner=multi_similarity, or miner=none with this loss"
            )
        return loss
    if not isinstance(loss, nn.Module):
        raise TypeError(f"loss group ({_target(loss_cfg)}) built a {type(loss).__name__}, not a torch module")
    if miner is not None:
        refusing = tuple(getattr(losses, name) for name in MINER_FREE_LOSSES if hasattr(losses, name))
        if isinstance(loss, refusing):
            raise ValueError(
                f"loss group ({_target(loss_cfg)}) takes no mined pairs or triplets, so it cannot be combined "
                f"with the miner group ({_target(miner_cfg)}): use miner=none"
            )
    return MinedMetricLoss(loss, miner)
