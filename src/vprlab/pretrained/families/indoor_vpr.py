"""Indoor-VPR (github.com/Enrico-Chiavassa/Indoor-VPR, release v0.1.0): EigenPlaces ResNet50-2048 and
SALAD DINOv2-8448 fine-tuned on indoor datasets (Gangnam Station, Hyundai Department Store, Baidu
Mall), two files ("variations") each. Its hub entry builds ``GeoLocalizationNet`` /
``GeoLocalizationViT``, which hold the EigenPlaces / SALAD hub model as ``self.model``, and loads
``<method>_<Backbone>_<dim>_<variation>.pth`` (a bare state dict) strictly into it: the keys are
EigenPlaces' / SALAD's own behind ``model.``. Built, converted and exported by :mod:`.cosplace` and
:mod:`.salad` with ``options["release_prefix"] = "model."``. ``GeoLocalizationViT.forward`` resizes
any input to the nearest multiples of 14 (bilinear, antialiased) before SALAD's model: the SALAD
entry's backbone does the same (``round_to_patch_multiple``). The hub entry's default
(``variation=0``) is what VPR-methods-evaluation evaluates ("eigenplaces-indoor", "salad-indoor")."""

from __future__ import annotations

from dataclasses import replace

from vprlab.pretrained.families._common import FAMILIES_MODULE, NATIVE, VME_DINO
from vprlab.pretrained.families.cosplace import cosplace_like
from vprlab.pretrained.registry import PublishedModel, register

_SALAD = f"{FAMILIES_MODULE}.salad"
RELEASE = "https://github.com/Enrico-Chiavassa/Indoor-VPR/releases/download/v0.1.0"
PAPER = "Chiavassa, Indoor-VPR v0.1.0, 2024, no paper cited"
PREFIX = "model."
# hubconf.py AVAILABLE_VARIATIONS: (method, Backbone, dim) -> the file suffix of variation 0 and 1.
VARIATIONS = {
    ("eigenplaces", "ResNet50", 2048): ("GB1_BAI_5_10", "GB1_BAI_10_25_S"),
    ("salad", "Dinov2", 8448): ("GB1_10_25", "HB1_GB1_2_5"),
}


def _file(method: str, backbone: str, dim: int, variation: int) -> str:
    return f"{method}_{backbone}_{dim}_{VARIATIONS[(method, backbone, dim)][variation]}"


def _name(method: str, backbone: str, dim: int, variation: int) -> str:
    """``eigenplaces_indoor_resnet50_2048`` / ``salad_indoor_dinov2_8448`` (variation 0, the hub's
    default); variation 1 has ``_v1`` after ``indoor``."""
    return f"{method}_indoor{'_v1' if variation else ''}_{backbone.lower()}_{dim}"


def _note(method: str, backbone: str, dim: int, variation: int) -> str:
    which = "the hub entry's default (variation=0), what VPR-methods-evaluation evaluates" if variation == 0 else \
        "variation=1 of the hub entry (another fine-tuning set and positive thresholds); VPR-methods-evaluation does not use it"
    return f"{which}; fine-tuning set and thresholds {VARIATIONS[(method, backbone, dim)][variation]}"


def eigenplaces_indoor(variation: int) -> PublishedModel:
    stem = _file("eigenplaces", "ResNet50", 2048, variation)
    return replace(
        cosplace_like("EigenPlaces", "ResNet50", 2048), name=_name("eigenplaces", "ResNet50", 2048, variation),
        method="EigenPlaces-indoor", paper=PAPER, file_name=f"{stem}.pth", url=f"{RELEASE}/{stem}.pth",
        options={"backbone": "resnet50", "fc_dim": 2048, "release_prefix": PREFIX, "variation": variation},
        note=_note("eigenplaces", "ResNet50", 2048, variation), repo="Enrico-Chiavassa/Indoor-VPR", aliases=(stem,),
        protocols={"vpr-methods-evaluation": NATIVE},  # VME: no ResizingWrapper for eigenplaces-indoor
    )


def salad_indoor(variation: int) -> PublishedModel:
    stem = _file("salad", "Dinov2", 8448, variation)
    return PublishedModel(
        name=_name("salad", "Dinov2", 8448, variation), method="SALAD-indoor", paper=PAPER, backbone="DINOv2 ViT-B/14",
        descriptor_dim=8448, file_name=f"{stem}.pth", url=f"{RELEASE}/{stem}.pth", container="torch",
        # No evaluation code of its own: the released forward takes a normalised tensor at any size and
        # rounds its sides to multiples of 14 (what VME's ResizingWrapper does too).
        preprocessing=VME_DINO,
        build=f"{_SALAD}:build_salad", convert=f"{_SALAD}:convert_salad",
        configs=f"{_SALAD}:configs_salad", export=f"{_SALAD}:export_salad",
        options={"release_prefix": PREFIX, "round_to_patch_multiple": True, "variation": variation},
        note=_note("salad", "Dinov2", 8448, variation), repo="Enrico-Chiavassa/Indoor-VPR", aliases=(stem,),
        protocols={"vpr-methods-evaluation": VME_DINO},
    )


for _variation in (0, 1):
    register(eigenplaces_indoor(_variation), salad_indoor(_variation))
