"""NetVLAD (Arandjelović et al., "NetVLAD: CNN architecture for weakly supervised place
recognition", CVPR 2016; PyTorch port github.com/Nanne/pytorch-NetVlad).

Each local feature is softly assigned to K clusters; the descriptor holds, per cluster, the
assignment-weighted sum of residuals (feature - centroid), intra-normalised per cluster, flattened
and L2-normalised: K * C dimensions, optionally reduced by PCA + whitening.

Parameter names (``centroids``, ``conv``) are those of the PyTorch port. ``assignment="hard"``
gives the plain VLAD of AnyLoc (Keetha et al., RA-L 2023): each feature goes to the centroid of
highest cosine similarity, no assignment layer.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vprlab.models.aggregators._common import (
    check_channels,
    check_positive_int,
    feature_map,
    full_precision,
    init_features,
    l2_flatten,
)
from vprlab.models.spec import Aggregator, AggregatorSpec

log = logging.getLogger(__name__)

# The initial soft-assignment makes a descriptor's nearest centroid ~100x more likely than the
# second nearest on average: alpha * (gap between the two) = -ln(0.01), as in the paper's code.
_ASSIGNMENT_RATIO = 0.01
# How the K x C residual matrix is flattened: k * C + c (PyTorch port) or c * K + k (MATLAB release).
FLATTEN_ORDERS = ("cluster_major", "channel_major")
ASSIGNMENTS = ("soft", "hard")


class NetVLAD(Aggregator):
    """Feature map [B, C, H, W] -> L2-normalised descriptor [B, K * C] (or [B, pca_dim]). Any spatial size.

    - ``num_clusters`` K = 64 as in the paper.
    - ``normalize_input``: L2-normalise every local feature first (the paper's setting).
    - ``vladv2=false`` (the paper's released models and the PyTorch port's default): assignment
      logits ``alpha * <c_k / |c_k|, x>``, no bias. ``vladv2=true``: the paper's equation 3,
      ``w_k = 2 alpha c_k``, ``b_k = -alpha |c_k|^2`` (soft nearest-centroid by squared distance).
    - Initialisation from data (``init_from_features``, called by the trainer before training and
      skipped on resume): faiss k-means on up to ``init_descriptors`` local features sampled from
      the training images gives the centroids, and alpha is set so that the nearest centroid gets
      ~100x the weight of the second nearest on average.
    - ``pca_dim``: a PCA (+ whitening if ``whiten``) to ``pca_dim`` dimensions learned on the VLAD
      descriptors of those training images at initialisation (as the paper does after training,
      here before it; the projection then trains with the rest, and ``fit_pca`` refits it on any
      descriptors). It needs more than ``pca_dim`` images (``trainer.aggregator_init_images``).
      The projection is a Linear with bias (``pca``) followed by L2 normalisation, which is also how
      the released MATLAB models apply their whitening (4096-d).
    - ``flatten_order``: the order of the K x C values in the descriptor. ``"cluster_major"`` (the
      PyTorch port's): index k * C + c; ``"channel_major"`` (the MATLAB release's, whose whitening
      expects it): index c * K + k.
    - ``assignment``: ``"soft"`` (NetVLAD: softmax of the ``conv`` logits) or ``"hard"`` (AnyLoc's
      VLAD: each local feature counts for the centroid whose direction ``c_k / |c_k|`` has the
      largest dot product with it, i.e. the highest cosine similarity; the residual is still taken to
      the centroid itself). Hard assignment has no ``conv`` layer (the state dict holds only
      ``centroids`` and ``initialised``); argmax passes no gradient to the assignment.
    """

    spec = AggregatorSpec(
        name="netvlad", paper="Arandjelović et al., CVPR 2016", descriptor="`num_clusters` x channels (or `pca_dim`)",
        small={"num_clusters": 4},
    )

    @staticmethod
    def output_dim(in_channels: int, num_clusters: int, pca_dim: int | None = None, **args) -> int:
        return pca_dim or num_clusters * in_channels

    def __init__(
        self,
        in_channels: int,
        num_clusters: int = 64,
        normalize_input: bool = True,
        vladv2: bool = False,
        pca_dim: int | None = None,
        whiten: bool = True,
        init_descriptors: int = 50_000,
        kmeans_iters: int = 100,
        seed: int = 0,
        flatten_order: str = "cluster_major",
        assignment: str = "soft",
    ) -> None:
        super().__init__()
        check_positive_int(
            "NetVLAD", in_channels=in_channels, num_clusters=num_clusters,
            init_descriptors=init_descriptors, kmeans_iters=kmeans_iters,
        )
        if pca_dim is not None:
            check_positive_int("NetVLAD", pca_dim=pca_dim)
            if pca_dim > num_clusters * in_channels:
                raise ValueError(
                    f"NetVLAD pca_dim={pca_dim} exceeds the VLAD dimension {num_clusters * in_channels} "
                    f"(num_clusters {num_clusters} x in_channels {in_channels}); use a smaller pca_dim or null"
                )
        if flatten_order not in FLATTEN_ORDERS:
            raise ValueError(f"NetVLAD flatten_order={flatten_order!r} is not one of {list(FLATTEN_ORDERS)}")
        self.flatten_order = flatten_order
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"NetVLAD assignment={assignment!r} is not one of {list(ASSIGNMENTS)}")
        if assignment == "hard" and vladv2:
            raise ValueError("NetVLAD assignment='hard' has no assignment layer, so vladv2=true means nothing; set vladv2=false")
        self.assignment = assignment
        self.in_channels = in_channels
        self.num_clusters = num_clusters
        self.normalize_input = normalize_input
        self.vladv2 = vladv2
        self.pca_dim = pca_dim
        self.whiten = whiten
        self.init_descriptors = init_descriptors
        self.kmeans_iters = kmeans_iters
        self.seed = seed

        self.centroids = nn.Parameter(torch.rand(num_clusters, in_channels))
        self.conv = nn.Conv2d(in_channels, num_clusters, kernel_size=1, bias=vladv2) if assignment == "soft" else None
        self.pca = nn.Linear(num_clusters * in_channels, pca_dim) if pca_dim else None
        # Saved with the weights, so an evaluated or resumed model knows it was initialised from data.
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @property
    def descriptor_dim(self) -> int:
        return self.pca_dim or self.num_clusters * self.in_channels

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """Local features [B, C, H, W] (already normalised if ``normalize_input``) -> weights [B, K, H*W]
        that sum to one over the clusters (hard assignment: one-hot)."""
        if self.conv is None:
            directions = F.normalize(self.centroids.float(), p=2.0, dim=1)  # [K, C]
            similarity = torch.einsum("kc,bcn->bkn", directions, x.flatten(2))
            return F.one_hot(similarity.argmax(dim=1), self.num_clusters).transpose(1, 2).to(x.dtype)
        logits = F.conv2d(x, self.conv.weight.float(), None if self.conv.bias is None else self.conv.bias.float())
        return torch.softmax(logits.flatten(2), dim=1)

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> intra-normalised, flattened and L2-normalised VLAD [B, K * C] (before PCA)."""
        x = feature_map(x, "NetVLAD")
        check_channels(x, self.in_channels, "NetVLAD")
        with full_precision(x):
            x = x.float()
            if self.normalize_input:
                x = F.normalize(x, p=2.0, dim=1)
            weights = self.soft_assignment(x)  # [B, K, N]
            local = x.flatten(2)  # [B, C, N]
            # sum_n a_kn (x_n - c_k) = sum_n a_kn x_n - c_k sum_n a_kn
            residuals = torch.bmm(weights, local.transpose(1, 2))  # [B, K, C]
            residuals = residuals - weights.sum(dim=2, keepdim=True) * self.centroids.float()
            residuals = F.normalize(residuals, p=2.0, dim=2)  # intra-normalisation
            if self.flatten_order == "channel_major":
                residuals = residuals.transpose(1, 2)  # [B, C, K]: index c * K + k
            return l2_flatten(residuals)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vlad = self.vlad(x)
        if self.pca is None:
            return vlad
        with full_precision(vlad):
            return l2_flatten(F.linear(vlad, self.pca.weight.float(), self.pca.bias.float()))

    # ------------------------------------------------------------------------------ initialisation

    def sample_local_features(self, features: torch.Tensor) -> torch.Tensor:
        """Up to ``init_descriptors`` local features [M, C] (L2-normalised if ``normalize_input``),
        spread evenly over the images and drawn reproducibly from ``seed``."""
        num_images, channels, height, width = features.shape
        positions = height * width
        per_image = min(positions, max(1, math.ceil(self.init_descriptors / num_images)))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.rand(num_images, positions, generator=generator).argsort(dim=1)[:, :per_image]
        local = features.flatten(2)  # [N, C, H*W]
        local = torch.gather(local, 2, chosen.to(local.device)[:, None, :].expand(-1, channels, -1))
        local = local.transpose(1, 2).reshape(-1, channels)
        if self.normalize_input:
            local = F.normalize(local, p=2.0, dim=1)
        return local[: self.init_descriptors]

    @torch.no_grad()
    def init_from_features(self, features: Any) -> None:
        """Initialise centroids and assignment from backbone features of training images
        ([N, C, H, W], or a list of per-image outputs), then learn the PCA if ``pca_dim`` is set."""
        features = init_features(features, "NetVLAD")
        check_channels(features, self.in_channels, "NetVLAD")
        local = self.sample_local_features(features).cpu()
        if local.shape[0] < self.num_clusters:
            raise ValueError(
                f"NetVLAD needs at least num_clusters={self.num_clusters} local features for k-means, got "
                f"{local.shape[0]} from {features.shape[0]} images; raise trainer.aggregator_init_images "
                "or lower aggregator.num_clusters"
            )
        centroids = kmeans(local, self.num_clusters, self.kmeans_iters, self.seed)
        self.set_clusters(centroids, local)
        if self.pca is not None:
            vlads = torch.cat([self.vlad(chunk) for chunk in features.split(64)])
            self.fit_pca(vlads)
        self.initialised.fill_(True)
        log.info("NetVLAD initialised: %d clusters from %d local features of %d images", self.num_clusters,
                 local.shape[0], features.shape[0])

    @torch.no_grad()
    def set_clusters(self, centroids: torch.Tensor, local: torch.Tensor) -> float:
        """Set ``centroids`` [K, C] and the assignment layer so that, over the local features ``local``
        [M, C], the nearest centroid is ~100x more likely than the second nearest. Returns alpha."""
        centroids, local = centroids.double(), local.double()
        if self.vladv2:
            distances = torch.cdist(local, centroids).pow(2)  # [M, K]
            nearest = distances.topk(2, dim=1, largest=False).values
            gap = (nearest[:, 1] - nearest[:, 0]).mean()
            alpha = -math.log(_ASSIGNMENT_RATIO) / max(gap.item(), 1e-12)
            weight, bias = 2.0 * alpha * centroids, -alpha * centroids.pow(2).sum(dim=1)
        else:
            directions = F.normalize(centroids, p=2.0, dim=1)
            best = (local @ directions.T).topk(2, dim=1).values  # [M, 2] two largest dot products
            gap = (best[:, 0] - best[:, 1]).mean()
            alpha = -math.log(_ASSIGNMENT_RATIO) / max(gap.item(), 1e-12)
            weight, bias = alpha * directions, None
        device = self.centroids.device
        self.centroids.copy_(centroids.to(device, self.centroids.dtype))
        if self.conv is None:  # hard assignment: the centroids are all there is
            return alpha
        self.conv.weight.copy_(weight[:, :, None, None].to(device, self.conv.weight.dtype))
        if bias is not None:
            self.conv.bias.copy_(bias.to(device, self.conv.bias.dtype))
        return alpha

    @torch.no_grad()
    def fit_pca(self, descriptors: torch.Tensor) -> None:
        """Learn the PCA (+ whitening) layer from VLAD descriptors [N, K * C] (N > pca_dim).

        Uses the N x N Gram matrix, so the cost stays O(N^2 D) for descriptors far wider than N.
        """
        if self.pca is None:
            raise ValueError("NetVLAD.fit_pca: this NetVLAD has no PCA layer; build it with pca_dim set")
        num, dim = descriptors.shape
        if num <= self.pca_dim:
            raise ValueError(
                f"NetVLAD pca_dim={self.pca_dim} needs more than {self.pca_dim} training descriptors to learn "
                f"its PCA, got {num}; raise trainer.aggregator_init_images above {self.pca_dim} or lower "
                "aggregator.pca_dim"
            )
        data = descriptors.detach().double().cpu()
        mean = data.mean(dim=0)
        centred = data - mean
        eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T)  # ascending
        eigenvalues = eigenvalues.flip(0)[: self.pca_dim].clamp(min=0)
        eigenvectors = eigenvectors.flip(1)[:, : self.pca_dim]
        scale = eigenvalues.max().clamp(min=1e-30)
        safe = eigenvalues.clamp(min=1e-12 * scale)
        directions = (centred.T @ eigenvectors) / safe.sqrt()  # [D, pca_dim], orthonormal columns
        weight = directions.T
        if self.whiten:  # unit variance along every kept direction
            variance = safe / (num - 1)
            weight = weight / variance.sqrt()[:, None]
        self.pca.weight.copy_(weight.to(self.pca.weight))
        self.pca.bias.copy_((-(weight @ mean)).to(self.pca.bias))


def kmeans(points: torch.Tensor, num_clusters: int, iters: int, seed: int) -> torch.Tensor:
    """faiss k-means of ``points`` [M, C] -> centroids [K, C] (float32, on the CPU)."""
    import faiss

    data = np.ascontiguousarray(points.float().cpu().numpy())
    clustering = faiss.Kmeans(
        data.shape[1], num_clusters, niter=iters, seed=seed, verbose=False,
        max_points_per_centroid=max(256, math.ceil(data.shape[0] / num_clusters)),
    )
    clustering.train(data)
    return torch.from_numpy(np.array(clustering.centroids, dtype=np.float32)).reshape(num_clusters, -1)
