"""Released BoQ models: load them, serve them through torch.hub, and export ours in their layout.

The two models published with the BoQ paper (v1.0 release of github.com/amaralibey/Bag-of-Queries)
are plain state dicts whose keys are exactly those of :class:`~vprlab.models.VPRModel` built with
``ResNetBackbone("resnet50")`` / ``DinoV2Backbone("vit_base_patch14_dinov2")`` and ``BoQ`` (see
``reference/boq_released_checkpoints``), so they load strictly, key for key. Models are always built
with ``pretrained=False``: a checkpoint overwrites every backbone weight, so the backbone's own
pretraining weights are never downloaded.

Also accepted, through explicit conversions (:func:`to_release_layout`): a vprlab training
checkpoint (``{"model": ...}``), a Lightning checkpoint (``{"state_dict": ...}``, e.g. from
OpenVPRLab) and OpenVPRLab's ResNet layout (``backbone.frozen_layers.*`` /
``backbone.unfrozen_layers.*``). Anything else fails with the list of keys and shapes that differ.

Entry points: :func:`load_pretrained` (Python), :func:`hub_model` (``hubconf.get_trained_boq``),
:func:`load_for_evaluation` (``evaluate.py pretrained=...``), :func:`export_release` and the CLI
``vprlab models export CKPT OUT`` / ``download NAME`` / ``list``.
"""

from vprlab.pretrained.catalog import is_published, published_model
from vprlab.pretrained.layouts import (
    NON_MODEL_PREFIXES,
    WRAPPER_PREFIXES,
    describe_differences,
    infer_architecture,
    load_release_state_dict,
    to_release_layout,
)
from vprlab.pretrained.load import (
    HUB_MODELS,
    eval_preprocessing,
    export_published,
    export_release,
    find_published,
    hub_model,
    hub_published,
    load_for_evaluation,
    load_pretrained,
    load_published,
    read_published_state,
    release_file,
)
from vprlab.pretrained.registry import (
    PUBLISHED_MODELS,
    RELEASE_URL,
    RELEASED_MODELS,
    BoQArchitecture,
    HubBoQModel,
    PublishedModel,
    ReleasedModel,
    register,
    released_model,
)

__all__ = [
    "HUB_MODELS", "NON_MODEL_PREFIXES", "PUBLISHED_MODELS", "PublishedModel", "RELEASED_MODELS", "RELEASE_URL", "WRAPPER_PREFIXES", "BoQArchitecture",
    "HubBoQModel", "ReleasedModel", "describe_differences", "export_published", "export_release", "find_published", "hub_model", "hub_published", "eval_preprocessing", "infer_architecture", "is_published", "load_published", "read_published_state", "published_model", "register",
    "load_for_evaluation", "load_pretrained", "load_release_state_dict", "release_file", "released_model",
    "to_release_layout",
]
