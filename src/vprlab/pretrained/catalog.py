"""Every published model vprlab loads by name: the released files of BoQ, CosPlace, EigenPlaces,
MixVPR, Conv-AP, SALAD, MegaLoc and NetVLAD, with their architecture, file, URL and the evaluation
preprocessing of their own code (facts: reference/published_checkpoints/README.md)."""

from __future__ import annotations

from vprlab.data.transforms import EvalPreprocessing
from vprlab.pretrained.registry import (
    _ALIASES,
    PUBLISHED_MODELS,
    RELEASED_MODELS,
    PublishedModel,
    register,
)
from vprlab.utils.errors import ConfigError

_RESNET = "vprlab.pretrained.families.resnet"
_DINO_VGG = "vprlab.pretrained.families.dinov2_vgg"  # SALAD, MegaLoc, NetVLAD and VGG16 (another family module)

NATIVE = EvalPreprocessing(size=None)
# VPR-methods-evaluation (github.com/gmberton/VPR-methods-evaluation): ToTensor, normalise, then the
# model wrapper resizes the normalised tensor (bilinear, antialiased).
_VME_320 = EvalPreprocessing((320, 320), "bilinear", antialias=True, stage="normalized")
_VME_DINO = EvalPreprocessing(None, "bilinear", antialias=True, stage="normalized", multiple_of=14)

# ------------------------------------------------------------------------------------------- BoQ

_BOQ_PAPER = "Ali-bey et al., CVPR 2024"
for _spec, _size in ((RELEASED_MODELS["boq_resnet50_16384"], 384), (RELEASED_MODELS["boq_dinov2_12288"], 322)):
    register(PublishedModel(
        name=_spec.name, method="BoQ", paper=_BOQ_PAPER,
        backbone="ResNet50" if _spec.hub_backbone == "resnet50" else "DINOv2 ViT-B/14",
        descriptor_dim=_spec.descriptor_dim, file_name=_spec.file_name, url=_spec.url, container="torch",
        preprocessing=EvalPreprocessing((_size, _size), "bicubic", antialias=True, stage="tensor"),
        build="vprlab.pretrained.families.boq:build_boq", configs="vprlab.pretrained.families.boq:configs_boq",
        export="vprlab.pretrained.families.boq:export_boq", options={"released": _spec.name},
        repo="amaralibey/Bag-of-Queries", aliases=tuple(a for a, n in _ALIASES.items() if n == _spec.name),
    ))

# ------------------------------------------------------------------------------- CosPlace, EigenPlaces

_RESNET_DEPTH = {"ResNet18": "resnet18", "ResNet50": "resnet50", "ResNet101": "resnet101", "ResNet152": "resnet152"}
_COSPLACE = {
    "VGG16": (64, 128, 256, 512),
    "ResNet18": (32, 64, 128, 256, 512),
    **{b: (32, 64, 128, 256, 512, 1024, 2048) for b in ("ResNet50", "ResNet101", "ResNet152")},
}
_EIGENPLACES = {"VGG16": (512,), "ResNet18": (256, 512), "ResNet50": (128, 256, 512, 1024, 2048), "ResNet101": (128, 256, 512, 1024, 2048)}


def _cosplace_like(method: str, backbone: str, dim: int) -> PublishedModel:
    lower = method.lower()
    vgg = backbone == "VGG16"
    note = ""
    if method == "EigenPlaces" and dim == 1024:
        note = "listed by the hub entry only; the EigenPlaces README and VPR-methods-evaluation do not list it (the file may not exist)"
    return PublishedModel(
        name=f"{lower}_{backbone.lower()}_{dim}", method=method,
        paper="Berton et al., CVPR 2022" if method == "CosPlace" else "Berton et al., ICCV 2023",
        backbone=backbone, descriptor_dim=dim, file_name=f"{backbone}_{dim}_{lower}.pth",
        url=f"https://github.com/gmberton/{method}/releases/download/v1.0/{backbone}_{dim}_{lower}.pth",
        container="torch", preprocessing=NATIVE, protocols={"vpr-methods-evaluation": NATIVE},
        build=f"{_DINO_VGG}:build_cosplace_vgg16" if vgg else f"{_RESNET}:build_cosplace",
        convert=f"{_DINO_VGG}:convert_cosplace_vgg16" if vgg else f"{_RESNET}:convert_cosplace",
        configs=f"{_DINO_VGG}:configs_cosplace_vgg16" if vgg else f"{_RESNET}:configs_cosplace",
        export=f"{_DINO_VGG}:export_cosplace_vgg16" if vgg else f"{_RESNET}:export_cosplace",
        options={"backbone": "vgg16" if vgg else _RESNET_DEPTH[backbone], "fc_dim": dim},
        note=note, repo=f"gmberton/{method}",
    )


for _backbone, _dims in _COSPLACE.items():
    register(*(_cosplace_like("CosPlace", _backbone, d) for d in _dims))
for _backbone, _dims in _EIGENPLACES.items():
    register(*(_cosplace_like("EigenPlaces", _backbone, d) for d in _dims))

# ------------------------------------------------------------------------------------ MixVPR, Conv-AP

_MIXVPR_DRIVE = {4096: "1vuz3PvnR7vxnDDLQrdHJaOA04SQrtk5L"}
for _dim, _channels, _rows in ((4096, 1024, 4), (512, 256, 2), (128, 64, 2)):
    _file = f"resnet50_MixVPR_{_dim}_channels({_channels})_rows({_rows}).ckpt"
    _where = (f"Google Drive file id {_MIXVPR_DRIVE[_dim]} (https://drive.google.com/file/d/{_MIXVPR_DRIVE[_dim]})"
              if _dim in _MIXVPR_DRIVE else "the Google Drive link in github.com/amaralibey/MixVPR's README")
    register(PublishedModel(
        name=f"mixvpr_resnet50_{_dim}", method="MixVPR", paper="Ali-bey et al., WACV 2023", backbone="ResNet50",
        descriptor_dim=_dim, file_name=_file, url=None, container="torch",
        preprocessing=EvalPreprocessing((320, 320), "bilinear", stage="pil"),
        build=f"{_RESNET}:build_mixvpr", convert=f"{_RESNET}:convert_mixvpr", configs=f"{_RESNET}:configs_mixvpr",
        export=f"{_RESNET}:export_gsv",
        options={"out_channels": _channels, "out_rows": _rows}, manual_download=_where,
        repo="amaralibey/MixVPR", protocols={"vpr-methods-evaluation": _VME_320},
    ))

_CONVAP_DRIVE = ("Google Drive folder 1VYPw9uGD11NgiGFgfWueLt3noJYOIuhL "
                 "(https://drive.google.com/drive/folders/1VYPw9uGD11NgiGFgfWueLt3noJYOIuhL, from github.com/amaralibey/gsv-cities)")
for _channels in (128, 512, 1024, 2048):
    _dim = 4 * _channels
    register(PublishedModel(
        name=f"convap_resnet50_{_dim}", method="Conv-AP", paper="Ali-bey et al., Neurocomputing 2022", backbone="ResNet50",
        descriptor_dim=_dim, file_name=f"resnet50_ConvAP_{_channels}_2x2.ckpt", url=None, container="torch",
        preprocessing=EvalPreprocessing((320, 320), "bilinear", stage="pil"),
        build=f"{_RESNET}:build_convap", convert=f"{_RESNET}:convert_convap", configs=f"{_RESNET}:configs_convap",
        export=f"{_RESNET}:export_gsv",
        options={"out_channels": _channels, "s1": 2, "s2": 2}, manual_download=_CONVAP_DRIVE,
        repo="amaralibey/gsv-cities", protocols={"vpr-methods-evaluation": _VME_320},
    ))

# ------------------------------------------------------------------------- SALAD, MegaLoc, NetVLAD

register(
    PublishedModel(
        name="salad_dinov2_8448", method="SALAD", paper="Izquierdo and Civera, CVPR 2024", backbone="DINOv2 ViT-B/14",
        descriptor_dim=8448, file_name="dino_salad.ckpt",
        url="https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt", container="torch",
        preprocessing=EvalPreprocessing((322, 322), "bilinear", stage="pil"),
        build=f"{_DINO_VGG}:build_salad", convert=f"{_DINO_VGG}:convert_salad",
        configs=f"{_DINO_VGG}:configs_salad", export=f"{_DINO_VGG}:export_salad",
        repo="serizba/salad", protocols={"vpr-methods-evaluation": _VME_DINO},
    ),
    PublishedModel(
        name="megaloc_dinov2_8448", method="MegaLoc", paper="Berton and Masone, arXiv 2025", backbone="DINOv2 ViT-B/14",
        descriptor_dim=8448, file_name="model.safetensors",
        url="https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors", container="safetensors",
        preprocessing=_VME_DINO, build=f"{_DINO_VGG}:build_megaloc", convert=f"{_DINO_VGG}:convert_megaloc",
        configs=f"{_DINO_VGG}:configs_megaloc", export=f"{_DINO_VGG}:export_megaloc",
        cache_dir="megaloc", repo="gmberton/MegaLoc", protocols={"vpr-methods-evaluation": _VME_DINO},
    ),
    PublishedModel(
        name="megaloc_dinov2_8448_legacy", method="MegaLoc", paper="Berton and Masone, arXiv 2025",
        backbone="DINOv2 ViT-B/14", descriptor_dim=8448, file_name="megaloc.torch",
        url="https://github.com/gmberton/MegaLoc/releases/download/v1.0/megaloc.torch", container="torch",
        preprocessing=_VME_DINO, build=f"{_DINO_VGG}:build_megaloc", convert=f"{_DINO_VGG}:convert_megaloc",
        configs=f"{_DINO_VGG}:configs_megaloc", export=f"{_DINO_VGG}:export_megaloc",
        note="the file the hub entry used from February 2025 to January 2026 (same model as megaloc_dinov2_8448)",
        repo="gmberton/MegaLoc", protocols={"vpr-methods-evaluation": _VME_DINO},
    ),
    *(PublishedModel(
        name=name, method="NetVLAD", paper="Arandjelovic et al., CVPR 2016", backbone="VGG16", descriptor_dim=dim,
        file_name="VGG16-NetVLAD-Pitts30K.mat", url="https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat",
        container="matlab", preprocessing=NATIVE, build=f"{_DINO_VGG}:build_netvlad", configs=f"{_DINO_VGG}:configs_netvlad",
        convert=f"{_DINO_VGG}:convert_netvlad", read=f"{_DINO_VGG}:read_netvlad_mat",
        options={"whitening": dim == 4096}, cache_dir="netvlad", repo="Relja/netvlad",
        protocols={"vpr-methods-evaluation": NATIVE},
        note="whitened (PCA) 4096-d" if dim == 4096 else "without whitening",
    ) for name, dim in (("netvlad_vgg16_pitts30k", 4096), ("netvlad_vgg16_pitts30k_32768", 32768))),
)

_PUBLISHED_ALIASES = {alias: entry.name for entry in PUBLISHED_MODELS.values() for alias in entry.aliases}


def published_model(name: str) -> PublishedModel:
    """The published model called ``name`` (also BoQ's aliases: ``resnet50_16384``, ``boq_dinov2``...)."""
    key = _PUBLISHED_ALIASES.get(name, name)
    if key not in PUBLISHED_MODELS:
        raise ConfigError(f"unknown published model {name!r}; `vprlab models list` shows them all: {', '.join(sorted(PUBLISHED_MODELS))}")
    return PUBLISHED_MODELS[key]


def is_published(name: str) -> bool:
    return str(name) in PUBLISHED_MODELS or str(name) in _PUBLISHED_ALIASES


def config_yaml(spec: PublishedModel) -> str:
    """The text of ``conf/pretrained/<name>.yaml`` (written by experiments/pretrained_configs.py; a test
    keeps the files equal to it)."""
    where = spec.local_path().parent.relative_to(spec.local_path().parent.parent)
    source = f"downloaded once from {spec.url}" if spec.url else f"no URL: get it from {spec.manual_download}"
    tune = "; `python train.py pretrained=NAME ...` fine-tunes it" if spec.configs else ""
    protocols = ", ".join(sorted(spec.protocols)) or "none"
    lines = [
        f"# {spec.method} {spec.backbone}, {spec.descriptor_dim}-d ({spec.paper}; github.com/{spec.repo}), evaluated with",
        f"# its own preprocessing: {spec.preprocessing.describe()}.",
        f"# `python evaluate.py pretrained={spec.name} benchmark=[...]`{tune.replace('NAME', spec.name)}.",
        "# Replaces the backbone/aggregator groups; the file holds every weight (nothing else is downloaded).",
        "# Generated by experiments/pretrained_configs.py from src/vprlab/pretrained/catalog.py.",
        f"name: {spec.name}",
        f"# A local copy of {spec.download_name}; null = <torch hub dir>/{where}/{spec.file_name},",
        f"# {source}.",
        "path: null",
        f"# null = the method's own evaluation preprocessing; other protocols: {protocols}.",
        "protocol: null",
    ]
    if spec.note:
        lines.insert(4, f"# Note: {spec.note}.")
    return "\n".join(lines) + "\n"
