"""Aggregators: backbone output -> L2-normalised global descriptor (a float32 tensor [B, descriptor_dim],
or a tuple whose first item is it). One file per method; shared steps live in ``_common``.

Each takes ``in_channels`` (passed by ``build_model`` from the backbone) and exposes ``descriptor_dim``.
"""

from vprlab.models.aggregators.avg import AVG
from vprlab.models.aggregators.boq import BoQ
from vprlab.models.aggregators.convap import ConvAP
from vprlab.models.aggregators.cosplace import CosPlace
from vprlab.models.aggregators.gem import GeM
from vprlab.models.aggregators.mac import MAC
from vprlab.models.aggregators.mixvpr import MixVPR
from vprlab.models.aggregators.netvlad import NetVLAD
from vprlab.models.aggregators.salad import SALAD

__all__ = ["AVG", "BoQ", "ConvAP", "CosPlace", "GeM", "MAC", "MixVPR", "NetVLAD", "SALAD"]
