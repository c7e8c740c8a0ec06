"""torch.hub entry points of vprlab: the released BoQ models, offline-safe.

    torch.hub.load("<owner>/vprlab", "get_trained_boq", backbone_name="dinov2", output_dim=12288)
    torch.hub.load("/path/to/vprlab", "get_trained_boq", source="local",
                   backbone_name="resnet50", weights="/path/resnet50_16384.pth")   # no network at all

The same call as the original ``amaralibey/bag-of-queries`` hub entry; the backbone's own
pretraining weights are never downloaded (the checkpoint overwrites them).
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "timm"]

# torch.hub imports this file from the repository root; vprlab lives under src/.
_SRC = Path(__file__).resolve().parent / "src"
if (_SRC / "vprlab").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))


def get_trained_boq(backbone_name="resnet50", output_dim=16384, pretrained=True, weights=None):
    """A released BoQ model in eval mode; ``model(images)`` returns ``(descriptors, attention maps)``.

    Args:
        backbone_name: ``"resnet50"`` (16384-d, evaluate at 384x384) or ``"dinov2"`` (12288-d, 322x322).
        output_dim: the descriptor size of the released model (16384 or 12288).
        pretrained: False gives the architecture with random weights and downloads nothing.
        weights: a local checkpoint in the release layout (the released ``.pth`` file, or one written by
            ``vprlab models export``); loaded instead of downloading. Its architecture
            must be the one ``backbone_name`` / ``output_dim`` name.

    Without ``weights`` the release file is downloaded once into ``<torch hub dir>/checkpoints/``
    (shared with the original hub entry) and read from there afterwards, also offline.
    Preprocessing: ``vprlab.load_pretrained`` returns the matching transform.
    """
    from vprlab.pretrained import hub_model

    return hub_model(backbone_name, output_dim, pretrained=pretrained, weights=weights)
