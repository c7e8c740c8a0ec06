"""Aggregators: feature map [B, C, H, W] -> global descriptor (a tensor, or a tuple whose first item is it)."""

from vprlab.models.aggregators.boq import BoQ
from vprlab.models.aggregators.gem import GeM

__all__ = ["BoQ", "GeM"]
