"""Models: backbones, aggregators and the VPRModel that chains them."""

from vprlab.models.vpr_model import VPRModel, build_model

__all__ = ["VPRModel", "build_model"]
