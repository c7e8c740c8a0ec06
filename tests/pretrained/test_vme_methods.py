"""Every method VPR-methods-evaluation serves (its parser.py --method choices @adbb6e2) is a published
model of vprlab's registry, found from the same arguments that tool takes."""

from __future__ import annotations

import pytest

from vprlab.pretrained import PUBLISHED_MODELS, VME_METHODS, vme_published
from vprlab.utils.errors import ConfigError

# (--method, --backbone, --descriptors_dimension) as VPR-methods-evaluation's README runs them -> our name.
CASES = [
    ("netvlad", None, 4096, "netvlad_vgg16_pitts30k"),
    ("netvlad", None, 32768, "netvlad_vgg16_pitts30k_32768"),
    ("apgem", None, None, "apgem_resnet101_2048"),
    ("sfrs", None, None, "sfrs_vgg16_4096"),
    ("cosplace", "ResNet50", 2048, "cosplace_resnet50_2048"),
    ("cosplace", "VGG16", 512, "cosplace_vgg16_512"),
    ("convap", "ResNet50", 4096, "convap_resnet50_4096"),
    ("mixvpr", "ResNet50", 4096, "mixvpr_resnet50_4096"),
    ("eigenplaces", "ResNet50", 2048, "eigenplaces_resnet50_2048"),
    ("eigenplaces-indoor", "ResNet50", 2048, "eigenplaces_indoor_resnet50_2048"),
    *((f"anyloc-{d}", None, None, f"anyloc_{d}_dinov2g_49152") for d in ("urban", "indoor", "aerial", "structured", "unstructured", "global")),
    ("salad", None, None, "salad_dinov2_8448"),
    ("salad-indoor", None, None, "salad_indoor_dinov2_8448"),
    ("cricavpr", None, None, "cricavpr_dinov2_10752"),
    ("clique-mining", None, None, "cliquemining_dinov2_8448"),
    ("megaloc", None, None, "megaloc_dinov2_8448"),
    ("boq", "ResNet50", 16384, "boq_resnet50_16384"),
    ("boq", "Dinov2", 12288, "boq_dinov2_12288"),
    ("dinomix", None, None, "dinomix_dinov2_4096"),
    ("edtformer", None, None, "edtformer_dinov2_4096"),
    ("supervlad", None, None, "supervlad_dinov2_3072"),
    ("supervlad-crossim", None, None, "supervlad_crossimage_dinov2_3072"),
    ("qaa", None, 8192, "qaa_dinov2_8192"),
    ("qaa", None, 1024, "qaa_dinov2_1024"),
]


@pytest.mark.parametrize(("method", "backbone", "dim", "name"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_vme_method_finds_the_published_model(method, backbone, dim, name):
    spec = vme_published(method, backbone, dim)
    assert spec.name == name and name in PUBLISHED_MODELS


def test_every_vme_method_is_covered():
    assert sorted({c[0] for c in CASES}) == sorted(VME_METHODS)
    assert len(VME_METHODS) == 25


def test_unknown_or_unreleased_choices_are_named():
    with pytest.raises(ConfigError, match="has no method 'patchnetvlad'.*anyloc-urban"):
        vme_published("patchnetvlad")
    with pytest.raises(ConfigError, match=r"no CosPlace model with backbone='ResNet50', dim=999.*\('ResNet50', 2048\)"):
        vme_published("cosplace", "ResNet50", 999)
    with pytest.raises(ConfigError, match="more than one BoQ model"):
        vme_published("boq")
