"""Synthetic place-recognition data: a GSV-Cities-format training set and a held-out benchmark.

Every place is a procedural street scene drawn on a panorama canvas wider than one
view: a horizon, a row of buildings (height, width, roof, window grid, facade texture,
shop fronts, signs), trees and poles. The *layout* identifies the place. Each capture of
a place changes what real captures change, so that nothing but the layout does:

- viewpoint: horizontal shift, tilt, zoom, roll and keystone (a perspective warp of the canvas);
- sky: drawn per capture (clear, overcast, dusk, haze), so the skyline's contrast flips;
- light: a cast shadow, brightness, contrast, gamma;
- colour / season: white balance gains, a hue rotation of up to +-180 degrees and a
  saturation change, so colour statistics say little about the place (places also
  draw their colours from one shared palette distribution);
- occluders: cars, people and blobs in front of the scene;
- sensor: blur, noise and JPEG compression.

Generation is seeded and deterministic (same config -> identical bytes) and needs only
numpy and PIL. Benchmark places are drawn from a separate seed stream, so they are
different scenes from the training places. A marker json next to the data holds the
config; generating again with the same config is a no-op, with another config the
previous output is removed first.

CLI: ``vprlab synth --root data/synthetic``.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from vprlab.data.gsv_cities import gsv_image_name
from vprlab.utils.images import as_hw
from vprlab.utils.io import atomic_save_npy, atomic_save_ragged_npy, atomic_write_bytes, atomic_write_json

SYNTHETIC_VERSION = 2  # bump whenever the same config would draw different pixels
MARKER_NAME = "synthetic.json"

# Seed-stream ids: training scenes, benchmark scenes and training metadata never share a stream.
_TRAIN, _BENCH, _TRAIN_META = 0, 1, 2
_CAPTURE_OFFSET = 1_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the generator; the marker stores all of them.

    Sizes are (height, width). Ranges are (low, high) of a uniform draw per capture.
    """

    num_train_places: int = 300
    images_per_place: int = 6
    num_cities: int = 2
    num_bench_places: int = 100
    bench_db_per_place: int = 1
    bench_queries_per_place: int = 2
    image_size: tuple[int, int] = (120, 160)
    seed: int = 0
    jpeg_quality: int = 90
    benchmark_name: str = "synthetic"
    # viewpoint (fractions of the view size)
    max_shift: float = 0.12
    max_tilt: float = 0.05
    zoom_range: tuple[float, float] = (0.9, 1.12)
    max_roll_deg: float = 3.0
    max_keystone: float = 0.06
    # light and colour
    shadow_prob: float = 0.35
    shadow_strength: tuple[float, float] = (0.45, 0.8)
    brightness_range: tuple[float, float] = (0.55, 1.4)
    contrast_range: tuple[float, float] = (0.6, 1.3)
    gamma_range: tuple[float, float] = (0.65, 1.5)
    white_balance: float = 0.25
    max_hue_rotation_deg: float = 180.0
    saturation_range: tuple[float, float] = (0.3, 1.5)
    # occlusion and sensor
    max_occluders: int = 2
    blur_prob: float = 0.25
    max_blur_radius: float = 1.2
    max_noise_std: float = 0.03

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", as_hw(self.image_size))
        for name in ("zoom_range", "shadow_strength", "brightness_range", "contrast_range",
                     "gamma_range", "saturation_range"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("num_train_places", "images_per_place", "num_cities", "num_bench_places",
                     "bench_db_per_place", "bench_queries_per_place"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_cities > self.num_train_places:
            raise ValueError(
                f"num_cities={self.num_cities} exceeds num_train_places={self.num_train_places}; "
                "every city needs at least one place"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def city_names(self) -> list[str]:
        return [f"SynthCity{i}" for i in range(self.num_cities)]


@dataclass(frozen=True)
class SyntheticPaths:
    """Where the generated data lives; ``generated`` is False when an existing copy was reused."""

    root: Path
    gsv_root: Path
    cities: list[str]
    benchmark_root: Path
    benchmark_name: str
    marker: Path
    generated: bool
    seconds: float
    num_train_images: int
    num_db_images: int
    num_query_images: int


# ----------------------------------------------------------------------------- colours
def _hls(rng: np.random.Generator, hue: float, light: tuple[float, float], sat: tuple[float, float]) -> tuple[int, ...]:
    h = (hue + rng.normal(0.0, 0.02)) % 1.0
    r, g, b = colorsys.hls_to_rgb(h, rng.uniform(*light), rng.uniform(*sat))
    return int(r * 255), int(g * 255), int(b * 255)


def _between(rng: np.random.Generator, low: float, high: float) -> float:
    """Uniform in [low, high], or ``low`` when the interval is empty (small buildings)."""
    return float(rng.uniform(low, high)) if high > low else float(low)


# Shared by all places: facades are brick, sand, stone, white, slate, ochre, sage, brown.
_FACADE_HUES = (0.02, 0.10, 0.08, 0.12, 0.60, 0.14, 0.30, 0.06)


def _facade_colour(rng: np.random.Generator) -> tuple[int, ...]:
    return _hls(rng, float(rng.choice(_FACADE_HUES)), (0.25, 0.85), (0.05, 0.55))


def _contrasting(rng: np.random.Generator, colour: tuple[int, ...]) -> tuple[int, ...]:
    """A colour clearly lighter or darker than ``colour`` (windows, signs, trim)."""
    light = sum(colour) / (3 * 255)
    target = (0.05, 0.3) if light > 0.5 else (0.7, 0.95)
    return _hls(rng, rng.uniform(0, 1), target, (0.0, 0.5))


# ----------------------------------------------------------------------------- scenes
@dataclass
class _Scene:
    canvas: Image.Image  # RGBA, alpha 0 where the sky shows
    horizon_y: float  # canvas row of the horizon


def _canvas_size(cfg: SyntheticConfig) -> tuple[int, int]:
    """(height, width) large enough that no capture's view leaves the canvas."""
    h, w = cfg.image_size
    zoom_min = cfg.zoom_range[0]
    roll = math.radians(cfg.max_roll_deg)
    half_w = (w / 2 / zoom_min) * (math.cos(roll) + 0.1) + (h / 2 / zoom_min) * math.sin(roll)
    half_h = (h / 2 / zoom_min) * (1 + cfg.max_keystone) * (math.cos(roll) + 0.1) + (w / 2 / zoom_min) * math.sin(roll)
    half_w += cfg.max_shift * w + 4
    half_h += cfg.max_tilt * h + 4
    return int(math.ceil(2 * half_h)), int(math.ceil(2 * half_w))


def _draw_building(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x0: float, x1: float,
                   base: float, top: float, unit: float) -> None:
    facade = _facade_colour(rng)
    trim = _contrasting(rng, facade)
    width, height = x1 - x0, base - top
    draw.rectangle([x0, top, x1, base], fill=facade)

    roof = rng.choice(["flat", "gable", "dome", "step", "antenna"], p=[0.4, 0.2, 0.1, 0.2, 0.1])
    if roof == "flat":
        draw.rectangle([x0 - 1, top - 0.03 * unit, x1 + 1, top], fill=trim)
    elif roof == "gable":
        draw.polygon([(x0, top), (x1, top), ((x0 + x1) / 2, top - rng.uniform(0.15, 0.5) * width)], fill=trim)
    elif roof == "dome":
        r = rng.uniform(0.2, 0.4) * width
        cx = (x0 + x1) / 2
        draw.pieslice([cx - r, top - r, cx + r, top + r], 180, 360, fill=trim)
    elif roof == "step":
        inset = rng.uniform(0.15, 0.35) * width
        draw.rectangle([x0 + inset, top - rng.uniform(0.08, 0.2) * unit, x1 - inset, top], fill=facade)
    else:
        ax = rng.uniform(x0 + 0.2 * width, x1 - 0.2 * width)
        draw.line([ax, top, ax, top - rng.uniform(0.1, 0.25) * unit], fill=trim, width=2)

    texture = rng.choice(["windows", "bands", "pilasters", "curtain", "bricks", "checker", "diagonal", "dots"],
                         p=[0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    shop_h = min(rng.uniform(0.08, 0.15) * unit, 0.4 * height) if rng.random() < 0.5 else 0.0
    upper = base - shop_h
    if texture in ("windows", "bands", "pilasters"):
        floor_h = rng.uniform(0.07, 0.14) * unit
        col_w = rng.uniform(0.06, 0.14) * unit
        rows = max(1, int((upper - top) / floor_h) - (texture == "bands"))
        cols = max(1, int(width / col_w))
        win_w = rng.uniform(0.35, 0.7) * width / cols
        win_h = rng.uniform(0.35, 0.7) * floor_h
        arched = rng.random() < 0.25
        window = _contrasting(rng, facade)
        for r in range(rows):
            cy = top + (r + 0.5) * (upper - top) / rows
            for c in range(cols):
                cx = x0 + (c + 0.5) * width / cols
                box = [cx - win_w / 2, cy - win_h / 2, cx + win_w / 2, cy + win_h / 2]
                (draw.ellipse if arched else draw.rectangle)(box, fill=window)
        if texture == "bands":
            for r in range(rows + 1):
                y = top + r * (upper - top) / rows
                draw.line([x0, y, x1, y], fill=trim, width=max(1, int(0.015 * unit)))
        if texture == "pilasters":
            for c in range(cols + 1):
                x = x0 + c * width / cols
                draw.line([x, top, x, upper], fill=trim, width=max(1, int(0.02 * unit)))
    elif texture == "curtain":
        glass = _hls(rng, rng.uniform(0.5, 0.62), (0.2, 0.6), (0.1, 0.5))
        draw.rectangle([x0 + 2, top + 2, max(x0 + 2, x1 - 2), max(top + 2, upper)], fill=glass)
        step_x, step_y = rng.uniform(0.04, 0.1) * unit, rng.uniform(0.04, 0.1) * unit
        for x in np.arange(x0 + 2, x1 - 2, step_x):
            draw.line([x, top + 2, x, upper], fill=trim)
        for y in np.arange(top + 2, upper, step_y):
            draw.line([x0 + 2, y, x1 - 2, y], fill=trim)
    elif texture == "checker":
        cell = rng.uniform(0.05, 0.12) * unit
        for i, y in enumerate(np.arange(top, upper - 1, cell)):
            for j, x in enumerate(np.arange(x0, x1 - 1, cell)):
                if (i + j) % 2:
                    draw.rectangle([x, y, min(x + cell, x1), min(y + cell, upper)], fill=trim)
    elif texture == "diagonal":
        step = rng.uniform(0.06, 0.14) * unit
        slope = rng.choice([-1.0, 1.0]) * (upper - top)
        stripe = max(2, int(rng.uniform(0.2, 0.5) * step))
        facade_img = Image.new("L", (max(1, int(x1 - x0)), max(1, int(upper - top))), 0)
        mask_draw = ImageDraw.Draw(facade_img)
        for x in np.arange(-abs(slope), x1 - x0 + abs(slope), step):
            mask_draw.line([x, 0, x + slope, upper - top], fill=255, width=stripe)
        draw.bitmap((x0, top), facade_img, fill=trim)
    elif texture == "dots":
        step = rng.uniform(0.08, 0.16) * unit
        r = rng.uniform(0.2, 0.4) * step
        for y in np.arange(top + step / 2, upper - r, step):
            for x in np.arange(x0 + step / 2, x1 - r, step):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=trim)
    else:  # bricks: a dense hatch of short strokes
        step = rng.uniform(0.025, 0.045) * unit
        for i, y in enumerate(np.arange(top + step, upper, step)):
            offset = (i % 2) * step
            for x in np.arange(x0 + offset, x1 - step, 2 * step):
                draw.line([x, y, x + step, y], fill=trim)

    if shop_h:
        front = _contrasting(rng, facade)
        draw.rectangle([x0 + 0.05 * width, upper + 0.1 * shop_h, x1 - 0.05 * width, base], fill=front)
        if rng.random() < 0.6:  # striped awning
            awning = _hls(rng, rng.uniform(0, 1), (0.3, 0.7), (0.3, 0.8))
            n = int(rng.integers(4, 10))
            for i in range(n):
                if i % 2 == 0:
                    ax0 = x0 + i * width / n
                    draw.rectangle([ax0, upper - 0.04 * unit, ax0 + width / n, upper + 0.02 * unit], fill=awning)
    else:
        door_w = rng.uniform(0.04, 0.08) * unit
        dx = _between(rng, x0, x1 - door_w)
        draw.rectangle([dx, base - rng.uniform(0.06, 0.1) * unit, dx + door_w, base], fill=trim)

    if rng.random() < 0.35:  # sign with a logo
        sw, sh = rng.uniform(0.2, 0.5) * width, rng.uniform(0.04, 0.08) * unit
        sx = _between(rng, x0, x1 - sw)
        sy = _between(rng, top + 0.1 * height, base - sh - shop_h)
        sign = _hls(rng, rng.uniform(0, 1), (0.2, 0.8), (0.4, 0.9))
        draw.rectangle([sx, sy, sx + sw, sy + sh], fill=sign)
        r = 0.4 * sh
        lx = sx + _between(rng, r, sw - r)
        draw.ellipse([lx - r, sy + sh / 2 - r, lx + r, sy + sh / 2 + r], fill=_contrasting(rng, sign))


def _render_scene(cfg: SyntheticConfig, rng: np.random.Generator) -> _Scene:
    ch, cw = _canvas_size(cfg)
    h, w = cfg.image_size
    unit = float(h)  # vertical scale of the scene: one view height
    canvas = Image.new("RGBA", (cw, ch), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    horizon = ch / 2 + rng.uniform(0.0, 0.25) * h  # below the view centre: mostly buildings in view

    if rng.random() < 0.7:  # distant skyline, low contrast
        far = _hls(rng, rng.uniform(0.55, 0.65), (0.5, 0.75), (0.0, 0.2))
        x = 0.0
        while x < cw:
            bw = rng.uniform(0.05, 0.2) * w
            draw.rectangle([x, horizon - rng.uniform(0.05, 0.3) * unit, x + bw, horizon + 1], fill=far)
            x += bw

    ground = _hls(rng, rng.uniform(0.05, 0.15), (0.25, 0.55), (0.0, 0.15))
    draw.rectangle([0, horizon, cw, ch], fill=ground)
    street_front = horizon + rng.uniform(0.02, 0.1) * unit
    walk = _hls(rng, rng.uniform(0.05, 0.15), (0.5, 0.8), (0.0, 0.15))
    draw.rectangle([0, street_front, cw, street_front + rng.uniform(0.04, 0.1) * unit], fill=walk)
    lane_y = street_front + rng.uniform(0.2, 0.4) * unit
    lane_colour = _hls(rng, rng.choice([0.13, 0.0]), (0.8, 0.95), (0.0, 0.8))
    dash, gap = rng.uniform(0.05, 0.2) * w, rng.uniform(0.05, 0.2) * w
    lane_w = max(1, int(rng.uniform(0.01, 0.025) * unit))
    for x in np.arange(rng.uniform(-dash, 0), cw, dash + gap):
        draw.rectangle([x, lane_y, x + dash, lane_y + lane_w], fill=lane_colour)
    if rng.random() < 0.3:  # crosswalk
        cx = rng.uniform(0.3, 0.7) * cw
        for i in range(int(rng.integers(4, 8))):
            sx = cx + i * 0.05 * w
            draw.polygon([(sx, street_front + 0.12 * unit), (sx + 0.025 * w, street_front + 0.12 * unit),
                          (sx + 0.035 * w, ch), (sx - 0.01 * w, ch)], fill=lane_colour)

    x = rng.uniform(-0.2, 0.0) * w
    while x < cw:
        if rng.random() < 0.2:  # gap between buildings
            x += rng.uniform(0.03, 0.15) * w
        bw = rng.uniform(0.12, 0.5) * w
        base = street_front - rng.uniform(0.0, 0.02) * unit
        top = base - rng.uniform(0.2, 0.9) * unit
        _draw_building(draw, rng, x, x + bw, base, top, unit)
        x += bw

    for _ in range(int(rng.poisson(2.0))):  # poles and street lights
        px = rng.uniform(0, cw)
        pb = street_front + rng.uniform(0.05, 0.1) * unit
        pt = pb - rng.uniform(0.3, 0.6) * unit
        pole = _hls(rng, 0.6, (0.1, 0.4), (0.0, 0.2))
        draw.line([px, pb, px, pt], fill=pole, width=max(2, int(0.015 * unit)))
        if rng.random() < 0.6:
            arm = rng.choice([-1, 1]) * rng.uniform(0.05, 0.1) * unit
            draw.line([px, pt, px + arm, pt], fill=pole, width=2)
            draw.ellipse([px + arm - 3, pt - 1, px + arm + 3, pt + 4], fill=_hls(rng, 0.15, (0.7, 0.95), (0.3, 0.9)))

    for _ in range(int(rng.poisson(1.5))):  # trees
        tx = rng.uniform(0, cw)
        tb = street_front + rng.uniform(0.04, 0.1) * unit
        th = rng.uniform(0.25, 0.5) * unit
        trunk = _hls(rng, 0.08, (0.15, 0.35), (0.2, 0.5))
        draw.rectangle([tx - 0.012 * unit, tb - 0.6 * th, tx + 0.012 * unit, tb], fill=trunk)
        r = rng.uniform(0.3, 0.5) * th
        crown = _hls(rng, rng.uniform(0.22, 0.38), (0.2, 0.45), (0.3, 0.7))
        draw.ellipse([tx - r, tb - th - r * 0.5, tx + r, tb - th + 1.5 * r], fill=crown)

    return _Scene(canvas=canvas, horizon_y=horizon)


# ----------------------------------------------------------------------------- captures
def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src``."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).tolist()


def _view(cfg: SyntheticConfig, scene: _Scene, rng: np.random.Generator) -> Image.Image:
    """Warp the canvas to one capture's viewpoint; returns RGBA at the output size."""
    h, w = cfg.image_size
    ch, cw = scene.canvas.height, scene.canvas.width
    zoom = rng.uniform(*cfg.zoom_range)
    cx = cw / 2 + rng.uniform(-cfg.max_shift, cfg.max_shift) * w
    cy = ch / 2 + rng.uniform(-cfg.max_tilt, cfg.max_tilt) * h
    roll = math.radians(rng.uniform(-cfg.max_roll_deg, cfg.max_roll_deg))
    keystone = rng.uniform(-cfg.max_keystone, cfg.max_keystone)
    hw, hh = w / 2 / zoom, h / 2 / zoom
    # corners top-left, top-right, bottom-right, bottom-left; keystone: one side taller (a yaw)
    local = np.array([[-hw, -hh * (1 + keystone)], [hw, -hh * (1 - keystone)],
                      [hw, hh * (1 - keystone)], [-hw, hh * (1 + keystone)]])
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    src = local @ rot.T + np.array([cx, cy])
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    return scene.canvas.transform((w, h), Image.Transform.PERSPECTIVE, _perspective_coeffs(src, dst),
                                  resample=Image.Resampling.BICUBIC)


_SKIES = (  # (top, horizon) as HLS ranges: clear, overcast, dusk, haze
    (((0.58, 0.62), (0.35, 0.55), (0.5, 0.9)), ((0.55, 0.6), (0.7, 0.85), (0.3, 0.7))),
    (((0.55, 0.65), (0.5, 0.75), (0.0, 0.1)), ((0.55, 0.65), (0.6, 0.85), (0.0, 0.1))),
    (((0.6, 0.7), (0.1, 0.3), (0.3, 0.7)), ((0.02, 0.1), (0.45, 0.65), (0.6, 0.9))),
    (((0.1, 0.6), (0.8, 0.95), (0.0, 0.3)), ((0.1, 0.6), (0.85, 0.98), (0.0, 0.2))),
)


def _sky(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    top, bottom = _SKIES[int(rng.integers(len(_SKIES)))]
    c0 = np.array(colorsys.hls_to_rgb(rng.uniform(*top[0]), rng.uniform(*top[1]), rng.uniform(*top[2])))
    c1 = np.array(colorsys.hls_to_rgb(rng.uniform(*bottom[0]), rng.uniform(*bottom[1]), rng.uniform(*bottom[2])))
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None] ** rng.uniform(0.5, 2.0)
    return np.broadcast_to((1 - t) * c0 + t * c1, (h, w, 3)).astype(np.float32)


def _draw_occluders(img: Image.Image, rng: np.random.Generator, max_occluders: int) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, max_occluders + 1))):
        colour = _hls(rng, rng.uniform(0, 1), (0.1, 0.9), (0.0, 0.9))
        kind = rng.choice(["car", "person", "blob"], p=[0.45, 0.3, 0.25])
        if kind == "car":
            cw_ = rng.uniform(0.2, 0.45) * w
            ch_ = rng.uniform(0.3, 0.45) * cw_
            x = rng.uniform(-0.2 * cw_, w - 0.8 * cw_)
            y = rng.uniform(0.65, 0.95) * h
            draw.rounded_rectangle([x, y - ch_, x + cw_, y], radius=ch_ / 4, fill=colour)
            draw.rectangle([x + 0.2 * cw_, y - 1.4 * ch_, x + 0.75 * cw_, y - ch_ + 1], fill=colour)
            wheel = 0.18 * cw_
            for wx in (x + 0.22 * cw_, x + 0.78 * cw_):
                draw.ellipse([wx - wheel / 2, y - wheel / 2, wx + wheel / 2, y + wheel / 2], fill=(20, 20, 20))
        elif kind == "person":
            ph = rng.uniform(0.2, 0.45) * h
            x, y = rng.uniform(0, w), rng.uniform(0.6, 1.0) * h
            draw.rectangle([x - 0.12 * ph, y - 0.8 * ph, x + 0.12 * ph, y], fill=colour)
            skin = _hls(rng, 0.07, (0.3, 0.8), (0.2, 0.6))
            draw.ellipse([x - 0.1 * ph, y - ph, x + 0.1 * ph, y - 0.78 * ph], fill=skin)
        else:
            r = rng.uniform(0.05, 0.2) * min(w, h)
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            draw.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r], fill=colour)


def _photometric(cfg: SyntheticConfig, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light and colour changes on a float image in [0, 1]."""
    h, w, _ = rgb.shape
    if rng.random() < cfg.shadow_prob:  # a cast shadow: everything on one side of a line
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        px, py = rng.uniform(0, w), rng.uniform(0, h)
        side = (xx - px) * math.cos(angle) + (yy - py) * math.sin(angle) > 0
        rgb = np.where(side[..., None], rgb * rng.uniform(*cfg.shadow_strength), rgb)
    rgb = rgb * rng.uniform(1 - cfg.white_balance, 1 + cfg.white_balance, size=3).astype(np.float32)

    # hue rotation and saturation in YIQ: the luminance Y is left alone
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    theta = math.radians(rng.uniform(-cfg.max_hue_rotation_deg, cfg.max_hue_rotation_deg))
    s = rng.uniform(*cfg.saturation_range)
    rot = np.array([[1, 0, 0],
                    [0, s * math.cos(theta), -s * math.sin(theta)],
                    [0, s * math.sin(theta), s * math.cos(theta)]], np.float32)
    mix = np.linalg.inv(to_yiq) @ rot @ to_yiq
    rgb = rgb @ mix.T.astype(np.float32)

    mean = rgb.mean()
    rgb = (rgb - mean) * rng.uniform(*cfg.contrast_range) + mean
    rgb = rgb * rng.uniform(*cfg.brightness_range)
    return np.clip(rgb, 0.0, 1.0) ** rng.uniform(*cfg.gamma_range)


def _capture(cfg: SyntheticConfig, scene: _Scene, rng: np.random.Generator) -> bytes:
    """One JPEG capture of a scene."""
    h, w = cfg.image_size
    view = _view(cfg, scene, rng)
    rgba = np.asarray(view, dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    rgb = rgba[..., :3] * alpha + _sky(h, w, rng) * (1 - alpha)
    img = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
    _draw_occluders(img, rng, cfg.max_occluders)
    rgb = _photometric(cfg, np.asarray(img, dtype=np.float32) / 255.0, rng)
    img = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
    if rng.random() < cfg.blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, cfg.max_blur_radius)))
    noise_std = rng.uniform(0, cfg.max_noise_std)
    if noise_std > 0:
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise_std * 255, size=(h, w, 3)).astype(np.float32)
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=cfg.jpeg_quality)
    return buf.getvalue()


def _rng(cfg: SyntheticConfig, stream: int, place: int, capture: int | None = None) -> np.random.Generator:
    key = [cfg.seed, stream, place] + ([] if capture is None else [_CAPTURE_OFFSET + capture])
    return np.random.default_rng(key)


def render_place(cfg: SyntheticConfig, stream: int, place: int, num_captures: int) -> list[bytes]:
    """JPEG bytes of ``num_captures`` captures of one place (pure function of its arguments)."""
    scene = _render_scene(cfg, _rng(cfg, stream, place))
    return [_capture(cfg, scene, _rng(cfg, stream, place, i)) for i in range(num_captures)]


# ----------------------------------------------------------------------------- writing
def _panoid(rng: np.random.Generator) -> str:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    return "".join(rng.choice(alphabet, size=22))


def _write_train(cfg: SyntheticConfig, gsv_root: Path) -> int:
    cities = cfg.city_names
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in cities}
    for place in range(cfg.num_train_places):
        city_index = place % cfg.num_cities
        city, place_id = cities[city_index], place // cfg.num_cities
        meta = _rng(cfg, _TRAIN_META, place)
        # a fake but valid coordinate per place, 6 decimals so str(float) round-trips through csv
        lat = round(40.0 + 2 * city_index + 0.0005 * (place_id // 100) + meta.uniform(0, 1e-4), 6)
        lon = round(-3.0 + 2 * city_index + 0.0005 * (place_id % 100) + meta.uniform(0, 1e-4), 6)
        for jpeg in render_place(cfg, _TRAIN, place, cfg.images_per_place):
            row = dict(place_id=place_id, year=int(meta.integers(2008, 2023)), month=int(meta.integers(1, 13)),
                       northdeg=int(meta.integers(0, 360)), city_id=city, lat=lat, lon=lon, panoid=_panoid(meta))
            name = gsv_image_name(**row)
            atomic_write_bytes(gsv_root / "Images" / city / name, jpeg)
            rows[city].append(row)
    (gsv_root / "Dataframes").mkdir(parents=True, exist_ok=True)
    for city, city_rows in rows.items():
        pd.DataFrame(city_rows, columns=list(city_rows[0])).to_csv(gsv_root / "Dataframes" / f"{city}.csv", index=False)
    return sum(len(r) for r in rows.values())


def _write_benchmark(cfg: SyntheticConfig, bench_root: Path) -> tuple[int, int]:
    db_paths: list[str] = []
    query_paths: list[str] = []
    positives: list[np.ndarray] = []
    n_db, n_q = cfg.bench_db_per_place, cfg.bench_queries_per_place
    for place in range(cfg.num_bench_places):
        # database and queries are captures of one scene under one nuisance distribution
        captures = render_place(cfg, _BENCH, place, n_db + n_q)
        first_db = len(db_paths)
        for i, jpeg in enumerate(captures[:n_db]):
            rel = f"database/p{place:05d}_{i}.jpg"
            atomic_write_bytes(bench_root / rel, jpeg)
            db_paths.append(rel)
        for i, jpeg in enumerate(captures[n_db:]):
            rel = f"queries/p{place:05d}_{i}.jpg"
            atomic_write_bytes(bench_root / rel, jpeg)
            query_paths.append(rel)
            positives.append(np.arange(first_db, first_db + n_db, dtype=np.int64))
    name = cfg.benchmark_name
    atomic_save_npy(bench_root / f"{name}_dbImages.npy", np.array(db_paths))
    atomic_save_npy(bench_root / f"{name}_qImages.npy", np.array(query_paths))
    atomic_save_ragged_npy(bench_root / f"{name}_gt.npy", positives)  # always ragged, like the released files
    return len(db_paths), len(query_paths)


def _marker_payload(cfg: SyntheticConfig, status: str, **extra: Any) -> dict[str, Any]:
    return {"version": SYNTHETIC_VERSION, "status": status, "config": json.loads(json.dumps(asdict(cfg))), **extra}


def generate_synthetic(root: str | Path, config: SyntheticConfig | None = None, *, force: bool = False,
                       **overrides: Any) -> SyntheticPaths:
    """Write ``root/gsv`` (GSV-Cities layout) and ``root/benchmark`` (.npy benchmark).

    ``overrides`` are :class:`SyntheticConfig` fields (``num_train_places=..., seed=...``)
    applied on top of ``config``. If ``root`` already holds data generated with the same
    config, nothing is written. Output of a different config (or an interrupted run) is
    removed and regenerated. Folders ``gsv``/``benchmark`` that this generator did not
    write (no marker) are never deleted: that raises ``FileExistsError`` instead.
    """
    cfg = config or SyntheticConfig()
    known = [f.name for f in fields(SyntheticConfig)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"unknown synthetic parameters {unknown}; known: {known}")
    cfg = replace(cfg, **overrides)

    root = Path(root)
    gsv_root, bench_root, marker = root / "gsv", root / "benchmark", root / MARKER_NAME
    wanted = _marker_payload(cfg, "complete")
    start = time.perf_counter()

    existing = None
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text())
        except json.JSONDecodeError:
            existing = {}
    if existing is not None and not force and {k: existing.get(k) for k in ("version", "status", "config")} == wanted:
        return SyntheticPaths(root, gsv_root, cfg.city_names, bench_root, cfg.benchmark_name, marker, False,
                              time.perf_counter() - start, existing.get("num_train_images", 0),
                              existing.get("num_db_images", 0), existing.get("num_query_images", 0))
    if existing is None:
        clashing = [p for p in (gsv_root, bench_root) if p.exists()]
        if clashing:
            raise FileExistsError(
                f"{clashing[0]} exists but has no {MARKER_NAME} marker, so it was not written by the "
                "synthetic generator; refusing to overwrite it. Choose another --root or remove that folder"
            )
    for p in (gsv_root, bench_root):
        if p.exists():
            shutil.rmtree(p)
    # Written first: an interrupted run leaves an 'incomplete' marker, so the next run may clean up.
    atomic_write_json(marker, _marker_payload(cfg, "incomplete"))

    num_train = _write_train(cfg, gsv_root)
    num_db, num_q = _write_benchmark(cfg, bench_root)
    seconds = time.perf_counter() - start
    atomic_write_json(marker, {**wanted, "num_train_images": num_train, "num_db_images": num_db,
                               "num_query_images": num_q, "seconds": round(seconds, 2)})
    return SyntheticPaths(root, gsv_root, cfg.city_names, bench_root, cfg.benchmark_name, marker, True,
                          seconds, num_train, num_db, num_q)


def main(argv: list[str] | None = None) -> SyntheticPaths:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(prog="vprlab synth", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="output folder (gets gsv/, benchmark/ and a marker)")
    for name in ("num_train_places", "images_per_place", "num_cities", "num_bench_places",
                 "bench_db_per_place", "bench_queries_per_place", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=list(defaults.image_size))
    parser.add_argument("--force", action="store_true", help="regenerate even if the marker matches")
    args = vars(parser.parse_args(argv))
    root, force = args.pop("root"), args.pop("force")
    paths = generate_synthetic(root, force=force, **args)
    h, w = args["image_size"]
    verb = "generated" if paths.generated else "already up to date (marker matches), reused"
    print(f"synthetic data {verb} in {paths.seconds:.1f}s at {paths.root}")
    print(f"  training (GSV-Cities layout): {paths.gsv_root}  cities={paths.cities}  "
          f"places={args['num_train_places']}  images={paths.num_train_images}  size={h}x{w} (HxW)")
    print(f"  benchmark (.npy, name={paths.benchmark_name!r}): {paths.benchmark_root}  "
          f"db={paths.num_db_images}  queries={paths.num_query_images}  places={args['num_bench_places']}")
    return paths


if __name__ == "__main__":
    main()
