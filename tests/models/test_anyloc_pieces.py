"""The zoo options AnyLoc is built from: DinoV2Backbone's intermediate facet (``facet_layer``),
NetVLAD's hard assignment, and the evaluation transform's centre crop to multiples of 14."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vprlab.data.transforms import CropToMultiple, EvalPreprocessing
from vprlab.models.aggregators.netvlad import NetVLAD
from vprlab.models.backbones.dinov2 import DinoV2Backbone

TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2}


def tiny_backbone(**kwargs) -> DinoV2Backbone:
    torch.manual_seed(0)
    args = dict(model_name="vit_small_patch14_dinov2", pretrained=False, num_trainable_blocks=0,
                train_image_size=None, eval_image_size=None, timm_overrides=TINY)
    return DinoV2Backbone(**{**args, **kwargs}).eval()


@pytest.mark.parametrize(("facet", "third"), [("query", 0), ("key", 1), ("value", 2)])
def test_facet_is_that_third_of_the_qkv_output_seen_by_a_hook(facet: str, third: int) -> None:
    backbone = tiny_backbone(facet_layer=1, facet=facet)
    seen = []
    handle = backbone.dino.blocks[1].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        out = backbone(x)
    handle.remove()
    assert len(seen) == 1 and out.shape == (2, 32, 2, 3)
    expected = seen[0][:, 1:, third * 32:(third + 1) * 32].transpose(1, 2).reshape(2, 32, 2, 3)
    torch.testing.assert_close(out, expected)


def test_token_facet_is_the_block_output_and_later_blocks_do_not_run() -> None:
    backbone = tiny_backbone(facet_layer=0, facet="token")
    backbone.dino.blocks[1].register_forward_hook(lambda *a: pytest.fail("block 1 ran"))
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        out = backbone(x)
        expected = backbone.dino.blocks[0](backbone.embed(x))[:, 1:].transpose(1, 2).reshape(1, 32, 2, 2)
    torch.testing.assert_close(out, expected)
    assert backbone.forward_frozen(x) is None  # no frozen/trainable split with a facet


def test_facet_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"facet_layer=3 is out of range .*0\.\.2"):
        tiny_backbone(facet_layer=3)
    with pytest.raises(ValueError, match="facet='attn'"):
        tiny_backbone(facet_layer=0, facet="attn")
    with pytest.raises(ValueError, match="num_trainable_blocks=0"):
        tiny_backbone(facet_layer=0, num_trainable_blocks=1)


def test_hard_netvlad_is_plain_vlad() -> None:
    torch.manual_seed(1)
    vlad = NetVLAD(in_channels=8, num_clusters=5, assignment="hard").eval()
    assert "conv.weight" not in vlad.state_dict() and set(vlad.state_dict()) == {"centroids", "initialised"}
    with torch.no_grad():
        vlad.centroids.copy_(torch.randn(5, 8) * 2)
    x = torch.randn(3, 8, 4, 5)
    with torch.no_grad():
        out = vlad(x)
    local = F.normalize(x.flatten(2).transpose(1, 2), dim=-1)  # [B, N, C]
    nearest = (local @ F.normalize(vlad.centroids, dim=1).T).argmax(-1)
    expected = torch.zeros(3, 5, 8)
    for b in range(3):
        for n in range(20):
            expected[b, nearest[b, n]] += local[b, n] - vlad.centroids[nearest[b, n]]
    expected = F.normalize(F.normalize(expected, dim=2).flatten(1), dim=1)
    torch.testing.assert_close(out, expected)


def test_hard_netvlad_initialises_from_features_and_refuses_vladv2() -> None:
    vlad = NetVLAD(in_channels=4, num_clusters=3, assignment="hard", kmeans_iters=5)
    vlad.init_from_features(torch.randn(4, 4, 5, 5))
    assert bool(vlad.initialised)
    with pytest.raises(ValueError, match="vladv2"):
        NetVLAD(in_channels=4, num_clusters=3, assignment="hard", vladv2=True)
    with pytest.raises(ValueError, match="assignment='fuzzy'"):
        NetVLAD(in_channels=4, num_clusters=3, assignment="fuzzy")


def test_crop_to_multiple() -> None:
    image = torch.arange(3 * 31 * 45, dtype=torch.float32).reshape(3, 31, 45)
    out = CropToMultiple(14)(image)
    # torchvision's centre crop: top = int(round((31 - 28) / 2)) = 2, left = int(round((45 - 42) / 2)) = 2
    assert torch.equal(out, image[:, 2:30, 2:44])
    assert CropToMultiple(14)(image[:, :28, :42]).shape == (3, 28, 42)
    with pytest.raises(ValueError, match="smaller than 14"):
        CropToMultiple(14)(image[:, :13])
    prep = EvalPreprocessing((30, 44), "bilinear", antialias=False, stage="normalized", crop_multiple_of=14)
    assert "CropToMultiple(multiple=14)" in repr(prep.transform())
