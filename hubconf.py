"""torch.hub entry points of vprlab: the released BoQ models and every other published model of
`vprlab models list`, offline-safe.

    torch.hub.load("<owner>/vprlab", "get_trained_model", method="cosplace", backbone="ResNet50", dim=2048)
    torch.hub.load("<owner>/vprlab", "mixvpr", dim=4096, weights="/path/resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt")

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


# ------------------------------------------------------------------------------- other published methods
# Every model of `vprlab models list`. Each returns the model in eval mode (``model(images)`` gives
# L2-normalised descriptors) carrying its method's evaluation preprocessing: ``model.eval_preprocessing``
# (``.transform()`` is the PIL -> tensor transform, ``.describe()`` says what it does). ``weights``: a local
# copy of the released file (nothing is downloaded); ``pretrained=False``: random weights, no download.


def get_trained_model(method="cosplace", backbone="ResNet50", dim=None, fc_output_dim=None, weights=None,
                      pretrained=True, protocol=None, variation=0):
    """A published model by method, backbone and descriptor size, e.g.
    ``get_trained_model("cosplace", "ResNet50", 2048)``, ``("eigenplaces", "ResNet101", 512)``,
    ``("mixvpr", "resnet50", 4096)``, ``("convap", "resnet50", 8192)``, ``("salad")``, ``("megaloc")``,
    ``("clique-mining")``, ``("salad-indoor")``, ``("eigenplaces-indoor", "ResNet50", 2048)``,
    ``("netvlad", "vgg16", 32768)``, ``("dinomix")``, ``("apgem")``, ``("sfrs")``, ``("cricavpr")``,
    ``("supervlad")``, ``("supervlad-crossimage")``, ``("qaa", dim=8192)``, ``("edtformer")``.
    ``fc_output_dim`` is CosPlace's name for ``dim``. ``protocol``: another evaluation protocol's
    preprocessing (e.g. ``"vpr-methods-evaluation"``); ``variation``: Indoor-VPR's second file of a
    model (1), else 0."""
    from vprlab.pretrained import hub_published

    dim = fc_output_dim if dim is None else dim
    if str(method).lower().replace("-", "") in ("salad", "megaloc", "cliquemining", "saladindoor", "dinomix", "apgem", "sfrs",
                                                 "cricavpr", "supervlad", "supervladcrossimage", "qaa", "edtformer"):  # one backbone each
        backbone = None if backbone == "ResNet50" else backbone
    return hub_published(method, backbone, dim, pretrained=pretrained, weights=weights, protocol=protocol, variation=variation)


def cosplace(backbone="ResNet50", fc_output_dim=2048, weights=None, pretrained=True):
    """CosPlace, called as ``torch.hub.load("gmberton/cosplace", "get_trained_model", backbone=..., fc_output_dim=...)``."""
    return get_trained_model("cosplace", backbone, fc_output_dim, weights=weights, pretrained=pretrained)


def eigenplaces(backbone="ResNet50", fc_output_dim=2048, weights=None, pretrained=True):
    """EigenPlaces, called as ``torch.hub.load("gmberton/eigenplaces", "get_trained_model", ...)``."""
    return get_trained_model("eigenplaces", backbone, fc_output_dim, weights=weights, pretrained=pretrained)


def mixvpr(dim=4096, weights=None, pretrained=True):
    """MixVPR ResNet50 (4096, 512 or 128-d); the file is on Google Drive: pass ``weights=``."""
    return get_trained_model("mixvpr", "resnet50", dim, weights=weights, pretrained=pretrained)


def convap(dim=4096, weights=None, pretrained=True):
    """Conv-AP ResNet50 (512, 2048, 4096 or 8192-d); the file is on Google Drive: pass ``weights=``."""
    return get_trained_model("convap", "resnet50", dim, weights=weights, pretrained=pretrained)


def dinov2_salad(weights=None, pretrained=True):
    """SALAD, called as ``torch.hub.load("serizba/salad", "dinov2_salad")``."""
    return get_trained_model("salad", None, 8448, weights=weights, pretrained=pretrained)


def clique_mining(weights=None, pretrained=True):
    """CliqueMining (SALAD's network, 8448-d; VPR-methods-evaluation's ``get_clique_mining_model``); the
    file is on Google Drive: pass ``weights=`` (the Lightning ``.ckpt``)."""
    return get_trained_model("clique-mining", None, 8448, weights=weights, pretrained=pretrained)


def indoor_vpr(method="eigenplaces", backbone="ResNet50", fc_output_dim=2048, variation=0, weights=None, pretrained=True):
    """Indoor-VPR's fine-tuned EigenPlaces / SALAD, called as
    ``torch.hub.load("Enrico-Chiavassa/Indoor-VPR", "get_trained_model", method=..., backbone=..., fc_output_dim=...)``:
    ``method="eigenplaces", backbone="ResNet50", fc_output_dim=2048`` or
    ``method="salad", backbone="Dinov2", fc_output_dim=8448``; ``variation`` 0 (the default, what
    VPR-methods-evaluation evaluates) or 1 (the release's second file of that model)."""
    return get_trained_model(f"{method}-indoor", backbone, fc_output_dim, weights=weights, pretrained=pretrained, variation=variation)


def megaloc(weights=None, pretrained=True):
    """MegaLoc (``torch.hub.load("gmberton/MegaLoc", "get_trained_model")``), 8448-d."""
    return get_trained_model("megaloc", None, 8448, weights=weights, pretrained=pretrained)


def netvlad(descriptors_dimension=4096, weights=None, pretrained=True):
    """NetVLAD VGG16 Pitts30k from the MATLAB file: 4096 (whitened) or 32768-d."""
    return get_trained_model("netvlad", "vgg16", descriptors_dimension, weights=weights, pretrained=pretrained)


def dino_mix(pretrained=True, weights=None):
    """DINO-Mix ViT-B/14, 4096-d, as ``torch.hub.load("GaoShuang98/DINO-Mix", "dino_mix", pretrained=True)``
    (VPR-methods-evaluation's ``dinomix.get_dino_mix()``); evaluate at 224x224."""
    return get_trained_model("dinomix", None, 4096, weights=weights, pretrained=pretrained)


def vgg16_netvlad(pretrained=False, weights=None):
    """SFRS (OpenIBL's VGG16 NetVLAD + PCA, 4096-d), as ``torch.hub.load("yxgeee/OpenIBL", "vgg16_netvlad",
    pretrained=True)``; like OpenIBL's entry, ``pretrained`` defaults to False (random weights)."""
    return get_trained_model("sfrs", "vgg16", 4096, weights=weights, pretrained=pretrained)


def apgem(weights=None, pretrained=True):
    """AP-GeM ResNet-101 (dirtorch's ``Resnet-101-AP-GeM.pt``, Landmarks-clean whitening), 2048-d; the file is
    on Google Drive: pass ``weights=`` (VPR-methods-evaluation's ``apgem.GeM()``)."""
    return get_trained_model("apgem", "resnet101", 2048, weights=weights, pretrained=pretrained)
def cricavpr(weights=None, pretrained=True):
    """CricaVPR (``torch.hub.load("Lu-Feng/CricaVPR", "trained_model")``), 10752-d. Its descriptors depend on
    the other images of the batch (cross-image encoder): batch the images as its evaluation does."""
    return get_trained_model("cricavpr", None, 10752, weights=weights, pretrained=pretrained)


def supervlad(model_name="SuperVLAD", weights=None, pretrained=True):
    """SuperVLAD, 3072-d, by VPR-methods-evaluation's ``get_supervlad`` name: ``"SuperVLAD"`` or
    ``"SuperVLAD-CrossImage"`` (descriptors then depend on the batch); the files are on Google Drive:
    pass ``weights=``."""
    if model_name not in ("SuperVLAD", "SuperVLAD-CrossImage"):
        raise ValueError(f"model_name={model_name!r}; released: 'SuperVLAD', 'SuperVLAD-CrossImage'")
    return get_trained_model(model_name, None, 3072, weights=weights, pretrained=pretrained)
def get_vlad_model(domain=None, backbone="DINOv2", vit_model="ViT-G/14", vit_layer=31, vit_facet="Value", num_c=32,
                   device="cpu", weights=None, pretrained=True, protocol=None):
    """AnyLoc-VLAD-DINOv2 (49152-d), called as AnyLoc's own entry is:
    ``torch.hub.load("AnyLoc/DINO", "get_vlad_model", backbone="DINOv2", domain="urban", device="cuda")``.
    ``domain``: "urban", "indoor", "aerial", "structured", "unstructured" or "global" (the released
    vocabularies); the other arguments must name the released DINOv2 ViT-G/14, layer 31, value facet,
    32 clusters. Needs two files: the vocabulary (``weights=`` or the torch hub cache's
    ``checkpoints/anyloc_files/``) and Meta's ``dinov2_vitg14_pretrain.pth`` (next to ``weights`` or in
    ``checkpoints/``), each downloaded once when absent. Input height and width must be multiples of 14."""
    from vprlab.pretrained import hub_anyloc

    return hub_anyloc(domain, backbone, vit_model, vit_layer, vit_facet, num_c, device=device, weights=weights,
                      pretrained=pretrained, protocol=protocol)
def qaa(descriptors_dimension=8192, weights=None, pretrained=True):
    """QAA DINOv2 ViT-B/14 (1024, 2048, 4096 or 8192-d), as VPR-methods-evaluation's
    ``get_qaa(descriptors_dimension)`` loads it from Hugging Face ``xjh19972/QAA-<dim>``."""
    return get_trained_model("qaa", None, descriptors_dimension, weights=weights, pretrained=pretrained)


def EDTformer(weights=None, pretrained=True):  # noqa: N802 - the name of the original hub entry
    """EDTformer DINOv2 ViT-B/14, 4096-d, called as ``torch.hub.load("Tong-Jin01/EDTformer", "EDTformer")``."""
    return get_trained_model("edtformer", None, 4096, weights=weights, pretrained=pretrained)
