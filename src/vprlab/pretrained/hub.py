"""torch.hub (hubconf.py): ``get_trained_boq`` (:func:`hub_model`, BoQ's own hub entry) and
``get_trained_model`` / one entry per published family (:func:`hub_published`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vprlab.models.vpr_model import VPRModel
from vprlab.pretrained.families.anyloc import DOMAINS as ANYLOC_DOMAINS
from vprlab.pretrained.families.boq import (
    RELEASED_MODELS,
    HubBoQModel,
    hub_backbone_name,
    infer_architecture,
    published_architecture,
    released_model,
)
from vprlab.pretrained.layouts import load_release_state_dict
from vprlab.pretrained.load import _resolve, _sidecar_size, load_published, read_release_state
from vprlab.pretrained.registry import PUBLISHED_MODELS, PublishedModel
from vprlab.utils.errors import ConfigError

# get_trained_boq's (backbone_name, output_dim) -> the BoQ release.
HUB_MODELS: dict[str, dict[int, str]] = {}
for _spec in RELEASED_MODELS.values():
    HUB_MODELS.setdefault(_spec.options["hub_backbone"], {})[_spec.descriptor_dim] = _spec.name


def hub_model(backbone_name: str = "resnet50", output_dim: int = 16384, pretrained: bool = True, weights: str | Path | None = None) -> HubBoQModel:
    """``get_trained_boq`` of hubconf.py: the released model (or ``weights``, a local file in the
    release layout) in eval mode; ``model(x)`` returns ``(descriptors, attention maps)``.

    ``pretrained=False`` (and no ``weights``) gives the architecture with random weights and
    downloads nothing. Backbone pretraining weights are never downloaded.
    """
    try:
        output_dim = int(output_dim)
    except (TypeError, ValueError):
        raise ConfigError(f"output_dim={output_dim!r} must be an integer such as 16384 or 12288") from None
    if weights is not None:
        path = Path(weights).expanduser()
        state = read_release_state(path)
        architecture = published_architecture(infer_architecture(state, f"weights={str(path)!r}"))
        recorded = _sidecar_size(path)
        if recorded is not None:
            architecture = replace(architecture, eval_image_size=recorded)
        name, dim = hub_backbone_name(architecture), architecture.descriptor_dim
        if (name, dim) != (backbone_name, output_dim):
            raise ConfigError(
                f"weights={str(path)!r} holds a {architecture.describe()} model; call "
                f"get_trained_boq(backbone_name={name!r}, output_dim={dim}, weights=...) "
                f"instead of backbone_name={backbone_name!r}, output_dim={output_dim}"
            )
        model = architecture.build(HubBoQModel)
        load_release_state_dict(model, state, f"weights={str(path)!r}", architecture.describe())
        return model.eval()
    if backbone_name not in HUB_MODELS:
        raise ConfigError(f"backbone_name={backbone_name!r}; the released models have {sorted(HUB_MODELS)}")
    if output_dim not in HUB_MODELS[backbone_name]:
        raise ConfigError(f"output_dim={output_dim} for backbone_name={backbone_name!r}; released: {sorted(HUB_MODELS[backbone_name])}")
    name = HUB_MODELS[backbone_name][output_dim]
    if not pretrained:
        return released_model(name).architecture.build(HubBoQModel).eval()
    model, _, _ = _resolve(name, None, None, HubBoQModel)
    return model.eval()  # type: ignore[return-value]


def _hub_key(text: Any) -> str:
    return "".join(c for c in str(text).lower() if c.isalnum())


def find_published(method: str, backbone: str | None = None, dim: int | None = None, variation: int = 0) -> PublishedModel:
    """The published model of ``method`` ("cosplace", "Conv-AP", "salad-indoor"...), ``backbone``
    ("ResNet50", "resnet50", "dinov2"...; None: the only one) and descriptor size ``dim`` (None: the
    only one); ``variation``: the release's n-th file of that model (Indoor-VPR's hub argument; 0 for
    every other release). A ValueError lists what exists."""
    candidates = [s for s in PUBLISHED_MODELS.values() if _hub_key(s.method) == _hub_key(method)]
    if not candidates:
        raise ConfigError(f"method={method!r}; published methods: {sorted({s.method for s in PUBLISHED_MODELS.values()})}")
    method = candidates[0].method
    if backbone is not None:
        key = _hub_key(backbone)
        candidates = [s for s in candidates if _hub_key(s.backbone) == key or _hub_key(s.backbone).startswith(key) or
                      _hub_key(s.name.split("_")[1]) == key]
    if dim is not None:
        candidates = [s for s in candidates if s.descriptor_dim == int(dim)]
    candidates = [s for s in candidates if int(s.options.get("variation", 0)) == int(variation)]
    if len(candidates) > 1:  # MegaLoc's legacy file holds the same model: the current one is meant
        candidates = [s for s in candidates if not s.name.endswith("_legacy")]
    if len(candidates) != 1:
        pairs = sorted({(s.backbone, s.descriptor_dim) for s in PUBLISHED_MODELS.values() if _hub_key(s.method) == _hub_key(method)})
        what = "no" if not candidates else "more than one"
        variations = f", variation={variation}" if variation else ""
        names = f" ({', '.join(s.name for s in candidates)}: choose by name)" if candidates else ""
        raise ConfigError(f"{what} {method} model with backbone={backbone!r}, dim={dim!r}{variations}{names}; released (backbone, dim): {pairs}")
    return candidates[0]


def hub_published(
    method: str, backbone: str | None = None, dim: int | None = None, pretrained: bool = True,
    weights: str | Path | None = None, protocol: str | None = None, variation: int = 0,
) -> VPRModel:
    """torch.hub ``get_trained_model``: the published model in eval mode (``model(x)`` -> L2-normalised
    descriptors), with its evaluation preprocessing as ``model.eval_preprocessing`` (``.transform()``).
    ``weights``: a local copy of the file (no download); ``pretrained=False``: random weights, nothing downloaded."""
    spec = find_published(method, backbone, dim, variation)
    if not pretrained and weights is None:
        model = spec.build_model()
    else:
        model, _ = load_published(spec.name, weights)
    model.eval_preprocessing = spec.eval_preprocessing(protocol)
    return model.eval()


def hub_anyloc(
    domain: str | None, backbone: str = "DINOv2", vit_model: str = "ViT-G/14", vit_layer: int = 31,
    vit_facet: str = "Value", num_c: int = 32, device: Any = "cpu", weights: str | Path | None = None,
    pretrained: bool = True, protocol: str | None = None,
) -> VPRModel:
    """torch.hub ``get_vlad_model``, called as AnyLoc's own entry (``AnyLoc/DINO``) is: the released
    AnyLoc-VLAD-DINOv2 of ``domain`` ("urban", "indoor", "aerial", "structured", "unstructured",
    "global") in eval mode on ``device``. The other arguments must name the released combination
    (DINOv2, ViT-G/14, layer 31, value facet, 32 clusters), compared as AnyLoc does (lower case,
    "/" and "-" ignored). ``weights``: a local copy of the vocabulary file (the DINOv2 file is looked
    for next to it, then in the torch hub cache); ``pretrained=False``: random weights, nothing downloaded."""
    wanted = (str(backbone).lower(), str(vit_model).replace("/", "").replace("-", "").lower(), int(vit_layer),
              str(vit_facet).lower(), int(num_c))
    if wanted != ("dinov2", "vitg14", 31, "value", 32):
        raise ConfigError(f"AnyLoc backbone={backbone!r}, vit_model={vit_model!r}, vit_layer={vit_layer!r}, "
                          f"vit_facet={vit_facet!r}, num_c={num_c!r}: the released vocabularies are for backbone='DINOv2', "
                          "vit_model='ViT-G/14', vit_layer=31, vit_facet='value', num_c=32 only")
    if domain is None or str(domain).lower() not in ANYLOC_DOMAINS:
        raise ConfigError(f"AnyLoc domain={domain!r}; the released vocabularies are {list(ANYLOC_DOMAINS)} (domain=None, a "
                          "model without vocabulary that you cluster yourself, is not offered)")
    spec = PUBLISHED_MODELS[f"anyloc_{str(domain).lower()}_dinov2g_49152"]
    if not pretrained and weights is None:
        model = spec.build_model()
    else:
        model, _ = load_published(spec.name, weights)
    model.eval_preprocessing = spec.eval_preprocessing(protocol)
    return model.eval().to(device)


# VPR-methods-evaluation's --method choices (gmberton/VPR-methods-evaluation@adbb6e2 parser.py), in its
# order, with the method names of vprlab's registry where the spelling differs beyond case and dashes.
VME_METHODS: tuple[str, ...] = (
    "netvlad", "apgem", "sfrs", "cosplace", "convap", "mixvpr", "eigenplaces", "eigenplaces-indoor",
    "anyloc-urban", "anyloc-indoor", "anyloc-aerial", "anyloc-structured", "anyloc-unstructured", "anyloc-global",
    "salad", "salad-indoor", "cricavpr", "clique-mining", "megaloc", "boq", "dinomix", "edtformer", "supervlad",
    "supervlad-crossim", "qaa",
)
_VME_SPELLINGS = {"supervlad-crossim": "SuperVLAD-CrossImage"}


def vme_published(method: str, backbone: str | None = None, descriptors_dimension: int | None = None) -> PublishedModel:
    """The published model that VPR-methods-evaluation's ``--method METHOD [--backbone B]
    [--descriptors_dimension D]`` evaluates (:data:`VME_METHODS`; ``anyloc-<domain>`` picks the domain's
    vocabulary). A ConfigError lists the methods or the released (backbone, dim) pairs."""
    key = str(method).lower()
    if key not in VME_METHODS:
        raise ConfigError(f"VPR-methods-evaluation has no method {method!r}; its methods: {', '.join(VME_METHODS)}")
    if key.startswith("anyloc-"):
        return PUBLISHED_MODELS[f"anyloc_{key.split('-', 1)[1]}_dinov2g_49152"]
    return find_published(_VME_SPELLINGS.get(key, key), backbone, descriptors_dimension)
