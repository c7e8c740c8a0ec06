"""Choosing queries to draw, the feature grid behind BoQ's tokens, and the attention figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vprlab.evaluation.visualize import (
    attention_maps,
    choose_queries,
    PictureSettings,
    feature_grid,
    save_attention_figure,
)
from vprlab.models.aggregators.boq import BoQ
from vprlab.models.vpr_model import VPRModel


def test_choose_queries():
    positives = [np.array([0]), np.array([1]), np.array([], dtype=np.int64), np.array([3]), np.array([4])]
    predictions = np.array([[0, 1], [2, 1], [1, 0], [3, 0], [0, 4]])
    P = PictureSettings
    assert choose_queries(5, P(num_queries=3)) == [0, 2, 4]
    assert choose_queries(5, P(num_queries=9)) == [0, 1, 2, 3, 4]
    assert choose_queries(5, P(num_queries=2, select="failures"), positives, predictions) == [1, 4]
    assert choose_queries(5, P(num_queries=2, select="random", seed=1)) == choose_queries(5, P(num_queries=2, select="random", seed=1))
    assert choose_queries(5, P(num_queries=0)) == [] and choose_queries(5, P(num_queries=0, queries=[3])) == [3]
    with pytest.raises(ValueError, match=r"visualize.queries \[7\] outside \[0, 5\)"):
        choose_queries(5, P(num_queries=1, queries=[7]))


@pytest.mark.parametrize(("tokens", "size", "grid"), [(576, (384, 384), (24, 24)), (529, (322, 322), (23, 23)),
                                                      (12, (48, 64), (3, 4)), (8, (32, 64), (2, 4))])
def test_feature_grid_recovers_the_backbone_map(tokens, size, grid):
    assert feature_grid(tokens, *size) == grid


class _Conv(torch.nn.Module):
    """A stride-8 conv 'backbone': [B, 3, H, W] -> [B, 16, H/8, W/8]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 8, stride=8)

    def forward(self, x):
        return self.conv(x)


def test_attention_maps_of_boq_over_the_image(tmp_path):
    torch.manual_seed(0)
    model = VPRModel(_Conv(), BoQ(16, proj_channels=16, num_queries=6, num_layers=2, row_dim=2))
    maps = attention_maps(model, torch.rand(3, 40, 64))
    assert len(maps) == 2 and maps[0].shape == (6, 5, 8)
    np.testing.assert_allclose(maps[1].reshape(6, -1).sum(axis=1), 1.0, rtol=1e-5)  # softmax over the tokens
    image = tmp_path / "q.png"
    Image.new("RGB", (64, 40), (10, 200, 30)).save(image)
    out = save_attention_figure(tmp_path / "a.png", str(image), maps, (40, 64), PictureSettings(attention_queries=[0, 5]))
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"attention_queries \[9\] outside \[0, 6\)"):
        save_attention_figure(tmp_path / "b.png", str(image), maps, (40, 64), PictureSettings(attention_queries=[9]))
    assert attention_maps(torch.nn.Identity(), torch.rand(3, 8, 8)) is None
