"""CosPlace (Berton et al., CVPR 2022): a ResNet or VGG16 + CosPlace head (per-position L2, GeM with a
learned p, Linear, L2), built from the zoo's :class:`~vprlab.models.backbones.resnet.ResNetBackbone` /
:class:`~vprlab.models.backbones.vgg.VGGBackbone` and the ``CosPlace`` aggregator. EigenPlaces
(:mod:`.eigenplaces`) releases the same network and uses these functions.

Key maps (reference/published_checkpoints/README.md):

- ResNet: ``backbone.N.*`` -> ``backbone.net.N.*`` (the same ``nn.Sequential`` of conv1, bn1, relu,
  maxpool, layer1..layer4, so the indices agree), ``aggregation.1.p`` -> ``aggregator.p`` (GeM
  exponent), ``aggregation.3.*`` -> ``aggregator.fc.*``.
- VGG16 (``VGG16_<dim>_cosplace.pth``): ``backbone.N.X`` -> ``backbone.net.N.X`` (torchvision's
  feature indices on both sides), ``aggregation.1.p`` -> ``aggregator.p``, ``aggregation.3.X`` ->
  ``aggregator.fc.X``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprlab.models.vpr_model import VPRModel, build_model
from vprlab.pretrained.families._common import (
    AGGREGATORS,
    FAMILIES_MODULE,
    NATIVE,
    Configs,
    add_prefix,
    check_against_model,
    export_what,
    prefixed,
    release_prefix,
    resnet_cfg,
    vgg16_cfg,
)
from vprlab.pretrained.keymaps import Rules, map_keys
from vprlab.pretrained.registry import PublishedModel, register

_HERE = f"{FAMILIES_MODULE}.cosplace"
_RESNET_DEPTH = {"ResNet18": "resnet18", "ResNet50": "resnet50", "ResNet101": "resnet101", "ResNet152": "resnet152"}


def cosplace_like(method: str, backbone: str, dim: int) -> PublishedModel:
    """The entry of ``<Backbone>_<dim>_<method>.pth`` of CosPlace's or EigenPlaces' v1.0 release."""
    lower = method.lower()
    vgg = backbone == "VGG16"
    suffix = "_vgg16" if vgg else ""
    note = ""
    if method == "EigenPlaces" and dim == 1024:
        note = "listed by the hub entry only; the EigenPlaces README and VPR-methods-evaluation do not list it (the file may not exist)"
    return PublishedModel(
        name=f"{lower}_{backbone.lower()}_{dim}", method=method,
        paper="Berton et al., CVPR 2022" if method == "CosPlace" else "Berton et al., ICCV 2023",
        backbone=backbone, descriptor_dim=dim, file_name=f"{backbone}_{dim}_{lower}.pth",
        url=f"https://github.com/gmberton/{method}/releases/download/v1.0/{backbone}_{dim}_{lower}.pth",
        container="torch", preprocessing=NATIVE, protocols={"vpr-methods-evaluation": NATIVE},
        build=f"{_HERE}:build_cosplace{suffix}", convert=f"{_HERE}:convert_cosplace{suffix}",
        configs=f"{_HERE}:configs_cosplace{suffix}", export=f"{_HERE}:export_cosplace{suffix}",
        options={"backbone": "vgg16" if vgg else _RESNET_DEPTH[backbone], "fc_dim": dim},
        note=note, repo=f"gmberton/{method}",
    )


# ------------------------------------------------------------------------------------------ ResNet


def configs_cosplace(entry: PublishedModel) -> Configs:
    """ResNet with layer4 kept (stride 32) + CosPlace (per-position L2, GeM with learned p, Linear, L2).
    CosPlace trains layer3 and layer4 at 512x512 and evaluates at the native size (eval_image_size None)."""
    backbone = resnet_cfg(entry.options["backbone"], False, 2, [512, 512], None)
    return backbone, {"_target_": f"{AGGREGATORS}.cosplace.CosPlace", "out_dim": int(entry.options["fc_dim"])}


def build_cosplace(entry: PublishedModel) -> VPRModel:
    return build_model(*configs_cosplace(entry))


COSPLACE_RESNET_RULES: Rules = (
    (r"backbone\.([014567])\.(.+)", r"backbone.net.\1.\2"),
    (r"aggregation\.1\.p", "aggregator.p"),
    (r"aggregation\.3\.(weight|bias)", r"aggregator.fc.\1"),
)


def convert_cosplace(raw: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    """``<Backbone>_<dim>_cosplace.pth`` / ``..._eigenplaces.pth`` (every key behind
    ``options["release_prefix"]`` where the release wraps the network: Indoor-VPR's ``model.``)."""
    prefix = release_prefix(entry)
    return map_keys(raw, prefixed(COSPLACE_RESNET_RULES, prefix),
                    f"{entry.method} {entry.backbone} release ({prefix}backbone.N.*, {prefix}aggregation.1.p, {prefix}aggregation.3.*)")


def export_cosplace(state: Mapping[str, torch.Tensor], entry: PublishedModel) -> dict[str, torch.Tensor]:
    """Our keys -> CosPlace's (the inverse of :func:`convert_cosplace`), in the release's order."""
    return add_prefix(map_keys(state, (
        (r"backbone\.net\.([014567])\.(.+)", r"backbone.\1.\2"),
        (r"aggregator\.p", "aggregation.1.p"),
        (r"aggregator\.fc\.(weight|bias)", r"aggregation.3.\1"),
    ), export_what(entry)), release_prefix(entry))


# ------------------------------------------------------------------------------------------- VGG16


def configs_cosplace_vgg16(entry: Any) -> Configs:
    """CosPlace / EigenPlaces VGG16: VGG16 to conv5_3 (ImageNet input; conv5 trains, 512x512 training
    images, native-size evaluation) + CosPlace (per-position L2, GeM, Linear 512 -> fc_dim, L2)."""
    return vgg16_cfg(None, [512, 512]), {"_target_": f"{AGGREGATORS}.cosplace.CosPlace", "out_dim": int(entry.options["fc_dim"])}


def build_cosplace_vgg16(entry: Any) -> VPRModel:
    return build_model(*configs_cosplace_vgg16(entry))


COSPLACE_VGG16_RULES: Rules = (
    (r"backbone\.(\d+\.(?:weight|bias))", r"backbone.net.\1"),
    (r"aggregation\.1\.p", "aggregator.p"),
    (r"aggregation\.3\.(weight|bias)", r"aggregator.fc.\1"),
)


def convert_cosplace_vgg16(raw: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """``VGG16_<dim>_cosplace.pth`` / ``VGG16_512_eigenplaces.pth`` -> the state dict of
    :func:`build_cosplace_vgg16`."""
    what = f"{getattr(entry, 'method', 'CosPlace')} VGG16 release (backbone.N.*, aggregation.1.p, aggregation.3.*)"
    state = map_keys(raw, COSPLACE_VGG16_RULES, what)
    return check_against_model(state, build_cosplace_vgg16, entry, what)


def export_cosplace_vgg16(state: Mapping[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """Our keys -> the CosPlace / EigenPlaces VGG16 release's (the inverse of :func:`convert_cosplace_vgg16`)."""
    return map_keys(state, (
        (r"backbone\.net\.(\d+\.(?:weight|bias))", r"backbone.\1"),
        (r"aggregator\.p", "aggregation.1.p"),
        (r"aggregator\.fc\.(weight|bias)", r"aggregation.3.\1"),
    ), export_what(entry))


# ----------------------------------------------------------------------------------------- releases

_RELEASED = {
    "VGG16": (64, 128, 256, 512),
    "ResNet18": (32, 64, 128, 256, 512),
    **{b: (32, 64, 128, 256, 512, 1024, 2048) for b in ("ResNet50", "ResNet101", "ResNet152")},
}
for _backbone, _dims in _RELEASED.items():
    register(*(cosplace_like("CosPlace", _backbone, d) for d in _dims))
