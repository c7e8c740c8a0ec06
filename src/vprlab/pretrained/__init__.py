"""Published VPR models (BoQ, CosPlace, EigenPlaces, MixVPR, Conv-AP, SALAD, MegaLoc, NetVLAD): load
them by name, serve them through torch.hub, fine-tune them, and export ours in their layout.

One registry (:mod:`.registry`, timm-like): each method's module under :mod:`.families` describes its
released files as :class:`PublishedModel` entries, registers them, and names the functions that
build the model from zoo components (random weights: a file overwrites every weight, so backbone
pretraining weights are never downloaded), map the file's keys to the model's (:mod:`.keymaps`,
explicit rules) and back. Loading is strict: a file whose keys differ fails with the keys named, in
the release's own names where the family can map them back. BoQ's releases use vprlab's own keys
(``reference/boq_released_checkpoints``); BoQ checkpoints of vprlab, Lightning (e.g. OpenVPRLab) and
OpenVPRLab's ResNet layout load through explicit conversions (:func:`to_release_layout`), and a BoQ
file describes its architecture, so an exported one loads by path.

Files: :mod:`.download` (the torch hub cache), :mod:`.load` (:func:`load_pretrained`,
:func:`load_published`), :mod:`.hub` (:func:`hub_model` = ``hubconf.get_trained_boq``,
:func:`hub_published`), :mod:`.export` and :mod:`.sidecar` (``vprlab models export``),
:mod:`.finetune` (``train.py pretrained=``), :mod:`.cli` (``vprlab models list / download / export``).
"""

from vprlab.pretrained.catalog import is_published, published_model
from vprlab.pretrained.download import release_file
from vprlab.pretrained.export import export_published, export_release
from vprlab.pretrained.families.boq import (
    RELEASE_URL,
    RELEASED_MODELS,
    BoQArchitecture,
    HubBoQModel,
    infer_architecture,
    released_model,
)
from vprlab.pretrained.hub import HUB_MODELS, VME_METHODS, find_published, hub_anyloc, hub_model, hub_published, vme_published
from vprlab.pretrained.keymaps import describe_differences, map_keys
from vprlab.pretrained.layouts import (
    NON_MODEL_PREFIXES,
    WRAPPER_PREFIXES,
    load_release_state_dict,
    to_release_layout,
)
from vprlab.pretrained.load import (
    eval_preprocessing,
    load_pretrained,
    load_published,
    read_published_state,
)
from vprlab.pretrained.registry import PUBLISHED_MODELS, PublishedModel, register

__all__ = [
    "HUB_MODELS", "NON_MODEL_PREFIXES", "PUBLISHED_MODELS", "PublishedModel", "RELEASED_MODELS", "RELEASE_URL", "WRAPPER_PREFIXES", "BoQArchitecture",
    "HubBoQModel", "describe_differences", "export_published", "export_release", "find_published", "hub_anyloc", "hub_model", "hub_published", "vme_published", "VME_METHODS", "eval_preprocessing", "infer_architecture", "is_published", "load_published", "map_keys", "read_published_state", "published_model", "register",
    "load_pretrained", "load_release_state_dict", "release_file", "released_model",
    "to_release_layout",
]
