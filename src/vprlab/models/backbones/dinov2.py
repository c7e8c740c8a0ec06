"""DINOv2 ViTs (built with timm) as VPR backbones, computing exactly what the BoQ release computes.

ViT-S/B/L/G with patch 14, with or without registers (``*_reg4_dinov2``); optionally the class token
(SALAD) and the final norm."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from vprlab.models.backbones._weights import create_timm_pretrained, load_strict
from vprlab.models.backbones.conv_adapter import CRICAVPR_ADAPTER, ConvAdapter, adapted_block
from vprlab.models.spec import Backbone
from vprlab.utils.images import IMAGENET_MEAN, IMAGENET_STD, as_hw
from vprlab.utils.weights import load_state_dict_file

DINOV2_MODELS = (
    "vit_small_patch14_dinov2",
    "vit_base_patch14_dinov2",
    "vit_large_patch14_dinov2",
    "vit_giant_patch14_dinov2",
    # "Vision Transformers Need Registers" (Darcet et al., ICLR 2024): 4 register tokens.
    "vit_small_patch14_reg4_dinov2",
    "vit_base_patch14_reg4_dinov2",
    "vit_large_patch14_reg4_dinov2",
    "vit_giant_patch14_reg4_dinov2",
)
PATCH_SIZE = 14
# Position embeddings are stored for 518x518 inputs: a 37x37 patch grid plus the class token.
POS_EMBED_IMAGE_SIZE = 518
# The DINOv2 release adds this to the target grid before turning it into a scale factor.
_INTERPOLATE_OFFSET = 0.1
# What ``facet_layer`` reads from a block: the query / key / value thirds of its attention's qkv
# projection (of the block's norm1 output), or "token", the block's output.
FACETS = ("query", "key", "value", "token")


def _release_file(model_name: str) -> str:
    """The name of the weights file a user would put at ``backbone.weights_path=`` (the DINOv2 release's
    ``dinov2_vits14_pretrain.pth`` ...; timm's safetensors file works too)."""
    url = getattr(timm.models.get_pretrained_cfg(model_name), "url", None) or ""
    return url.rsplit("/", 1)[-1] or f"{model_name}.pth"


def check_image_size(size: int | Sequence[int], patch_size: int = PATCH_SIZE) -> None:
    """Raise a ValueError unless every side of ``size`` (int or (H, W)) is a multiple of ``patch_size``.

    Called by the backbone on each input, and usable by config validation before anything is built.
    """
    sides = [size] if isinstance(size, int) else list(size)
    for side in sides:
        side = int(side)
        if side < patch_size or side % patch_size:
            below = max(patch_size, side // patch_size * patch_size)
            above = (side // patch_size + 1) * patch_size
            suggestion = f"{above}" if above == below else f"{above} or {below}"
            raise ValueError(
                f"image size {side} is not a multiple of the DINOv2 patch size {patch_size}; use {suggestion}"
            )


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid_h: int, grid_w: int, num_prefix_positions: int = 1
) -> torch.Tensor:
    """Resize [1, P + M*M, C] position embeddings to a grid_h x grid_w patch grid like the DINOv2 release.

    ``num_prefix_positions`` P: 1 (the class token's position comes first, kept as is) or 0 (timm's
    register models, whose class-token position is folded into the class token).

    Bicubic, no antialiasing, driven by the scale factor ``(grid + 0.1) / M`` rather than a target size
    (the two give different sampling positions); the class-token embedding is kept as is. Computed in
    float32 and returned in the dtype of ``pos_embed``. Rows use ``grid_h`` and columns ``grid_w``, as the
    release does (its code calls the image height ``w``, but the result is the same).
    """
    num_patches = pos_embed.shape[1] - num_prefix_positions
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"pos_embed has {num_patches} patch positions, not a square grid")
    if grid_h == side and grid_w == side:
        return pos_embed
    dtype = pos_embed.dtype
    pos_embed = pos_embed.float()
    cls_pos, patch_pos = pos_embed[:, :num_prefix_positions], pos_embed[:, num_prefix_positions:]
    dim = pos_embed.shape[-1]
    patch_pos = F.interpolate(
        patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=((grid_h + _INTERPOLATE_OFFSET) / side, (grid_w + _INTERPOLATE_OFFSET) / side),
        mode="bicubic",
        antialias=False,
    )
    if patch_pos.shape[-2:] != (grid_h, grid_w):  # floor(M * (g + 0.1) / M) == g for every sane g
        raise RuntimeError(f"position embeddings resized to {tuple(patch_pos.shape[-2:])}, not {(grid_h, grid_w)}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)


def nearest_patch_multiple(side: int, patch_size: int = PATCH_SIZE) -> int:
    """``side`` rounded to the nearest multiple of ``patch_size`` as MegaLoc does (Python's ``round`` of
    ``side / patch_size``, so an exact half goes to the even multiple: 21 -> 28, 35 -> 28, 49 -> 56)."""
    rounded = round(side / patch_size) * patch_size
    if rounded < patch_size:
        raise ValueError(
            f"image side {side} rounds to {rounded}, below the DINOv2 patch size {patch_size}; "
            f"use images of at least {(patch_size + 1) // 2} pixels per side"
        )
    return rounded


def resize_to_patch_multiple(x: torch.Tensor, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """Resize a (normalised) batch [B, C, H, W] so that H and W are the nearest multiples of
    ``patch_size`` (:func:`nearest_patch_multiple`): bilinear, antialiased, what MegaLoc's forward does
    (torchvision's tensor ``resize``). Returned unchanged when both sides already are multiples."""
    height, width = x.shape[-2:]
    if height % patch_size == 0 and width % patch_size == 0:
        return x
    size = (nearest_patch_multiple(height, patch_size), nearest_patch_multiple(width, patch_size))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class ParallelAdapter(nn.Module):
    """A low-rank residual adapter on the side stream of :class:`DinoV2Backbone` (EDTformer's "LoPA",
    Jin et al., TCSVT 2025): ``y + scale * up(GELU(down(y)))`` with a ``hidden_dim``-wide bottleneck.
    ``up`` starts at zero, as EDTformer initialises it."""

    def __init__(self, dim: int, hidden_dim: int, scale: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden_dim)
        self.up = nn.Linear(hidden_dim, dim)
        self.scale = float(scale)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(F.gelu(self.down(x)))


def release_to_timm_keys(state: dict[str, torch.Tensor], no_embed_class: bool) -> dict[str, torch.Tensor]:
    """A state dict of the DINOv2 release with timm's names: ``register_tokens`` -> ``reg_token`` (the
    class-token position folded into ``cls_token``, as timm's register models hold it) and ViT-G's
    SwiGLU ``mlp.w12`` / ``mlp.w3`` -> ``mlp.fc1`` / ``mlp.fc2``. timm files pass through unchanged."""
    state = dict(state)
    if "register_tokens" in state:
        state["reg_token"] = state.pop("register_tokens")
    pos = state.get("pos_embed")
    if no_embed_class and pos is not None and "cls_token" in state:
        side = int(round((pos.shape[1] - 1) ** 0.5))
        if side * side == pos.shape[1] - 1:  # release layout: class position first
            state["cls_token"] = state["cls_token"] + pos[:, :1]
            state["pos_embed"] = pos[:, 1:]
    for key in list(state):
        for old, new in ((".mlp.w12.", ".mlp.fc1."), (".mlp.w3.", ".mlp.fc2.")):
            if old in key:
                state[key.replace(old, new)] = state.pop(key)
    return state


class DinoV2Backbone(Backbone):
    """A DINOv2 ViT returning its patch tokens as a feature map [B, C, H/14, W/14], or
    ``(feature map, class token [B, C])`` with ``return_cls_token=True`` (what SALAD reads).

    The timm model lives in ``self.dino`` with an extra (unused, frozen) ``mask_token`` so that the
    state-dict keys are those of the DINOv2 release and of the released BoQ checkpoint
    (``backbone.dino.*``); an original DINOv2 ``dinov2_vit*14_pretrain.pth`` file loads as is.

    The forward pass is written here rather than taken from timm because timm resizes position
    embeddings differently from the release (antialiased, by target size), which changes the features
    at any input size other than 518. The final ``norm`` is stored but not applied, and the class
    token is dropped, as in BoQ.

    Only the last ``num_trainable_blocks`` transformer blocks train; patch embedding, class token,
    position embeddings, register tokens, earlier blocks, mask token and final norm are frozen (and
    run without autograd, which saves memory).

    ``apply_final_norm=True`` applies the final LayerNorm to every token (SALAD's setting; BoQ does
    not); the norm then trains along with the trainable blocks. Register tokens (``*_reg4_*``
    models) are dropped from the output like the class token.

    Weights: ``weights_path`` (a state dict with DINOv2 or timm key names; ``mask_token`` optional) is
    loaded whenever it is given, whatever ``pretrained`` says; otherwise ``pretrained=True`` downloads
    timm's DINOv2 weights (LVD-142M) and ``pretrained=False`` keeps the random initialisation.

    ``grad_checkpointing=True`` keeps only each trainable block's input during the training forward
    pass and recomputes the block's activations in the backward pass (activation checkpointing): the
    same gradients for one more forward of the trainable blocks, and a fraction of their memory.

    ``train_image_size`` / ``eval_image_size`` record the input sizes the model is meant for (BoQ
    DINOv2: trained at 280, evaluated at 322); they are checked against the patch size at once so a
    bad config fails before any data is read.

    ``round_to_patch_multiple=True`` (MegaLoc's setting) accepts any input size: a batch whose height
    or width is not a multiple of 14 is first resized to the nearest multiples (bilinear, antialiased;
    :func:`resize_to_patch_multiple`), and the sizes are then not checked.

    ``keep_mask_token=False`` leaves the unused ``mask_token`` out of the model (and its state dict),
    for releases whose files lack it (MegaLoc's ``model.safetensors``); a ``weights_path`` file that
    holds one is then read without it.

    ``keep_final_norm=False`` removes the final ``norm`` from the model and its state dict (DINO-Mix
    replaces it by an identity, so its file holds no ``norm.*``); it needs ``apply_final_norm=False``,
    and a ``weights_path`` file that holds the norm is then read without it.
    ``conv_adapters=True`` (CricaVPR's setting) adds a multi-scale convolutional adapter
    (:class:`~vprlab.models.backbones.conv_adapter.ConvAdapter`, ``dino.blocks.N.adapter``) to the
    feed-forward branch of every block; the adapters always train (CricaVPR trains only them), start as
    a zero update, are added after ``weights_path`` is read (a DINOv2 file has none) and need models
    without register tokens.
    ``facet_layer`` (0-based index into ``blocks``, AnyLoc: 31 of ViT-G's 40) returns an intermediate
    facet instead of the last block's tokens: ``facet`` "query" / "key" / "value" is that third of
    the block's ``attn.qkv`` output (the linear projection of ``norm1(tokens)``, before the heads are
    split; what a forward hook on ``blocks[i].attn.qkv`` sees), "token" the block's output. Only the
    patch tokens are returned, as a feature map [B, C, H/14, W/14]; the later blocks and the final
    norm are never run (their weights stay in the model so a full DINOv2 file loads strictly). No
    class token with a facet; the whole network is frozen (``num_trainable_blocks`` must be 0).

    ``timm_overrides`` (e.g. ``{"depth": 3, "embed_dim": 64, "num_heads": 4}``) are passed to
    ``timm.create_model``: a smaller network with the same code path, for tests.
    ``adapter_dim=N`` (EDTformer's setting: 4) adds one :class:`ParallelAdapter` per block on a side
    stream that starts as the embedded tokens: after block i, ``side = adapters[i](side + tokens_i)``,
    and the side stream (not the blocks' output) goes on to the final norm and the output. The adapters
    always train (EDTformer trains only them in the backbone); ``adapter_scale`` is their residual
    weight (0.5). The frozen/trainable split of :meth:`forward_frozen` does not apply then (None).
    """

    can_return_cls_token = True

    @classmethod
    def config_stride(cls, config) -> int:
        return PATCH_SIZE

    @classmethod
    def config_patch_size(cls, config) -> int | None:
        return None if config.get("round_to_patch_multiple", False) else PATCH_SIZE

    def __init__(
        self,
        model_name: str = "vit_base_patch14_dinov2",
        pretrained: bool = True,
        weights_path: str | Path | None = None,
        num_trainable_blocks: int = 2,
        train_image_size: int | Sequence[int] | None = (280, 280),
        eval_image_size: int | Sequence[int] | None = (322, 322),
        return_cls_token: bool = False,
        apply_final_norm: bool = False,
        round_to_patch_multiple: bool = False,
        keep_mask_token: bool = True,
        grad_checkpointing: bool = False,
        keep_final_norm: bool = True,
        conv_adapters: bool = False,
        facet_layer: int | None = None,
        facet: str = "value",
        timm_overrides: dict | None = None,
        adapter_dim: int | None = None,
        adapter_scale: float = 0.5,
    ) -> None:
        super().__init__()
        if apply_final_norm and not keep_final_norm:
            raise ValueError("apply_final_norm=True needs the final norm: set keep_final_norm=True (or apply_final_norm=False)")
        if model_name not in DINOV2_MODELS:
            raise ValueError(f"unknown DINOv2 model_name={model_name!r}; choose one of {list(DINOV2_MODELS)}")
        self.train_image_size = None if train_image_size is None else as_hw(train_image_size, "train_image_size")
        self.eval_image_size = None if eval_image_size is None else as_hw(eval_image_size, "eval_image_size")
        self.round_to_patch_multiple = bool(round_to_patch_multiple)
        for name, size in (("train_image_size", self.train_image_size), ("eval_image_size", self.eval_image_size)):
            if size is not None and not self.round_to_patch_multiple:
                try:
                    check_image_size(size)
                except ValueError as err:
                    raise ValueError(f"backbone.{name}: {err}") from None
        download = pretrained and weights_path is None  # a local file wins over downloading
        kwargs = dict(img_size=POS_EMBED_IMAGE_SIZE, num_classes=0, **dict(timm_overrides or {}))
        if download:  # fails within seconds offline (no hub retries), naming backbone.weights_path=
            dino = create_timm_pretrained(timm.create_model, model_name, _release_file(model_name), **kwargs)
        else:
            dino = timm.create_model(model_name, pretrained=False, **kwargs)
        num_registers = int(getattr(dino, "num_reg_tokens", 0) or 0)
        if dino.num_prefix_tokens != 1 + num_registers or dino.cls_token is None:
            raise ValueError(
                f"{model_name} has {dino.num_prefix_tokens} prefix tokens; expected the class token "
                f"and {num_registers} register tokens"
            )
        # DINOv2 keeps a mask token for masked-image pretraining; timm drops it. Registered (zeros, as in
        # DINOv2's init) only so that released checkpoints load strictly.
        self.keep_mask_token = bool(keep_mask_token)
        if self.keep_mask_token:
            dino.mask_token = nn.Parameter(torch.zeros(1, dino.embed_dim))
        self.keep_final_norm = bool(keep_final_norm)
        if not self.keep_final_norm:
            dino.norm = nn.Identity()
        self.dino = dino
        if weights_path is not None:
            what = f"a {model_name} state dict (DINOv2 or timm key names)"
            state = release_to_timm_keys(load_state_dict_file(weights_path, what), dino.no_embed_class)
            if self.keep_mask_token:
                state.setdefault("mask_token", self.dino.mask_token.detach().clone())  # timm files lack it
            else:
                state.pop("mask_token", None)  # unused at inference
            if not self.keep_final_norm:
                state = {k: v for k, v in state.items() if not k.startswith("norm.")}
            load_strict(self.dino, state, weights_path, what)
        self.conv_adapters = bool(conv_adapters)
        if self.conv_adapters:
            if num_registers:
                raise ValueError(f"conv_adapters=true needs a DINOv2 model without register tokens, not {model_name}")
            hidden = dino.embed_dim // 2
            sizes = CRICAVPR_ADAPTER if hidden == CRICAVPR_ADAPTER["hidden"] else {
                "hidden": hidden, "branch1x1": hidden // 2, "branch3x3": (hidden // 16, hidden // 4),
                "branch5x5": (hidden // 16, hidden // 4),
            }
            for block in dino.blocks:
                block.adapter = ConvAdapter(dino.embed_dim, **sizes)

        self.model_name = model_name
        self.num_register_tokens = num_registers
        self.return_cls_token = bool(return_cls_token)
        self.apply_final_norm = bool(apply_final_norm)
        self.grad_checkpointing = bool(grad_checkpointing)
        self.out_channels: int = dino.embed_dim
        if facet not in FACETS:
            raise ValueError(f"DINOv2 facet={facet!r}; choose one of {list(FACETS)}")
        if facet_layer is not None:
            if not 0 <= int(facet_layer) < len(dino.blocks):
                raise ValueError(f"facet_layer={facet_layer} is out of range for {model_name} ({len(dino.blocks)} blocks: 0..{len(dino.blocks) - 1})")
            if num_trainable_blocks or return_cls_token:
                raise ValueError("facet_layer reads a frozen intermediate facet: set num_trainable_blocks=0 and return_cls_token=false")
        self.facet_layer = None if facet_layer is None else int(facet_layer)
        self.facet = facet
        self.patch_size: int = PATCH_SIZE
        self.stride: int = PATCH_SIZE
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

        depth = len(dino.blocks)
        if not 0 <= num_trainable_blocks <= depth:
            raise ValueError(
                f"num_trainable_blocks={num_trainable_blocks} is out of range for {model_name}; use 0..{depth}"
            )
        self.num_trainable_blocks = num_trainable_blocks
        self.dino.requires_grad_(False)
        for block in self.trainable_blocks:
            block.requires_grad_(True)
        if self.conv_adapters:
            for block in self.dino.blocks:
                block.adapter.requires_grad_(True)
        if self.apply_final_norm and num_trainable_blocks > 0:
            self.dino.norm.requires_grad_(True)
        self.adapters: nn.ModuleList | None = None
        if adapter_dim is not None:
            if isinstance(adapter_dim, bool) or not isinstance(adapter_dim, int) or adapter_dim < 1:
                raise ValueError(f"adapter_dim must be a positive integer or null, got {adapter_dim!r}")
            self.adapters = nn.ModuleList(ParallelAdapter(dino.embed_dim, adapter_dim, adapter_scale) for _ in range(depth))

    @property
    def trainable_blocks(self) -> list[nn.Module]:
        blocks = list(self.dino.blocks)
        return blocks[len(blocks) - self.num_trainable_blocks :]

    @property
    def frozen_blocks(self) -> list[nn.Module]:
        blocks = list(self.dino.blocks)
        return blocks[: len(blocks) - self.num_trainable_blocks]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding + class token (+ registers) + (resized) position embeddings -> tokens
        [B, 1 + registers + N, C]."""
        _, _, height, width = x.shape
        check_image_size((height, width), self.patch_size)
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        tokens = self.dino.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = self.dino.patch_embed.norm(tokens)  # Identity for DINOv2; kept for other timm configs
        cls = self.dino.cls_token.expand(tokens.shape[0], -1, -1)
        if not self.dino.no_embed_class:
            tokens = torch.cat((cls, tokens), dim=1)
            pos = interpolate_pos_embed(self.dino.pos_embed, grid_h, grid_w)
            return tokens + pos  # dtype promotion as in the release (fp32 embeddings under autocast)
        # Register models (timm layout): positions for the patches only; the class position lives in
        # cls_token; registers get none (the release inserts them after adding positions).
        tokens = tokens + interpolate_pos_embed(self.dino.pos_embed, grid_h, grid_w, num_prefix_positions=0)
        registers = self.dino.reg_token.expand(tokens.shape[0], -1, -1)
        return torch.cat((cls.to(tokens.dtype), registers.to(tokens.dtype), tokens), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.facet_layer is not None:
            return self.forward_facet(x)
        if self.adapters is not None:
            return self._forward_adapted(x)
        return self.forward_from_frozen(self._forward_frozen(x))

    def forward_facet(self, x: torch.Tensor) -> torch.Tensor:
        """The ``facet`` of block ``facet_layer`` for the patch tokens: [B, C, H/14, W/14]."""
        _, _, height, width = x.shape
        tokens = self.embed(x)
        blocks = list(self.dino.blocks)
        for block in blocks[: self.facet_layer]:
            tokens = block(tokens)
        block = blocks[self.facet_layer]
        if self.facet == "token":
            out = block(tokens)
        else:
            qkv = block.attn.qkv(block.norm1(tokens))  # [B, N, 3C]: query, key, value (heads inside each)
            third = FACETS.index(self.facet)
            out = qkv[..., third * self.out_channels : (third + 1) * self.out_channels]
        patches = out[:, 1 + self.num_register_tokens :]
        return patches.transpose(1, 2).reshape(x.shape[0], self.out_channels, height // self.patch_size, width // self.patch_size)

    def forward_frozen(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int] | None:
        """(tokens after the frozen blocks, patch rows, patch columns), computed without autograd; None when
        part of it was unfrozen by hand, with adapters or with a ``facet_layer`` (then only the whole
        forward is right). See :meth:`forward_from_frozen`."""
        if self.facet_layer is not None or self.adapters is not None:
            return None
        return self._forward_frozen(x) if self._frozen_part_is_frozen() else None

    def _forward_adapted(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The forward pass with parallel adapters: the blocks on the main stream (frozen ones without
        autograd), each adapter on ``side + block output``; the side stream is the output."""
        if self.round_to_patch_multiple:
            x = resize_to_patch_multiple(x, self.patch_size)
        _, _, height, width = x.shape
        grid = (height // self.patch_size, width // self.patch_size)
        frozen = self._frozen_part_is_frozen()
        with torch.no_grad() if frozen else contextlib.nullcontext():
            tokens = self.embed(x)
        side = tokens
        num_frozen = len(self.frozen_blocks)
        for index, (block, adapter) in enumerate(zip(self.dino.blocks, self.adapters)):
            tokens = self._run_block(block, tokens, grid, frozen=frozen and index < num_frozen)
            side = adapter(side + tokens)
        return self._outputs(side, *grid)

    def _frozen_part_is_frozen(self) -> bool:
        embeddings = [self.dino.cls_token, self.dino.pos_embed]
        if self.dino.reg_token is not None:
            embeddings.append(self.dino.reg_token)
        frozen = [self.dino.patch_embed, *self.frozen_blocks]
        return not any(p.requires_grad for p in [*embeddings, *(p for m in frozen for p in m.parameters())])

    def _forward_frozen(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if self.round_to_patch_multiple:
            x = resize_to_patch_multiple(x, self.patch_size)
        _, _, height, width = x.shape
        # Skip autograd through the frozen part unless someone unfroze it by hand after construction.
        with torch.no_grad() if self._frozen_part_is_frozen() else contextlib.nullcontext():
            tokens = self.embed(x)
            grid = (height // self.patch_size, width // self.patch_size)
            for block in self.frozen_blocks:
                tokens = self._block(block, tokens, grid)
        return tokens, grid[0], grid[1]

    def _block(self, block: nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """One block (with its CricaVPR adapter when ``conv_adapters``)."""
        return adapted_block(block, tokens, grid) if self.conv_adapters else block(tokens)

    def _run_block(self, block: nn.Module, tokens: torch.Tensor, grid: tuple[int, int], frozen: bool = False) -> torch.Tensor:
        """:meth:`_block` without autograd when ``frozen``, else under a non-reentrant checkpoint when
        ``grad_checkpointing`` is on and gradients are recorded."""
        if frozen:
            with torch.no_grad():
                return self._block(block, tokens, grid)
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._block, block, tokens, grid, use_reentrant=False)
        return self._block(block, tokens, grid)

    def forward_from_frozen(self, frozen: tuple[torch.Tensor, int, int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The trainable blocks (+ final norm) on :meth:`forward_frozen`'s tokens -> the feature map (and class token)."""
        tokens, grid_h, grid_w = frozen
        # With grad_checkpointing, non-reentrant checkpoints: they work with frozen inputs, autocast and
        # keyword-free blocks; the random state is replayed in the recomputation (stochastic depth, dropout).
        for block in self.trainable_blocks:
            tokens = self._run_block(block, tokens, (grid_h, grid_w))
        return self._outputs(tokens, grid_h, grid_w)

    def _outputs(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Final norm (if applied), then the patch tokens as a map [B, C, grid_h, grid_w] (and the class token)."""
        if self.apply_final_norm:
            tokens = self.dino.norm(tokens)
        patches = tokens[:, 1 + self.num_register_tokens :]
        grid = patches.transpose(1, 2).reshape(tokens.shape[0], self.out_channels, grid_h, grid_w)
        if self.return_cls_token:
            return grid, tokens[:, 0]
        return grid
