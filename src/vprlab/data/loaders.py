"""Turn the ``dataset`` and ``benchmark`` config groups into loaders and benchmarks."""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vprlab.utils.config import to_plain
from vprlab.utils.errors import ConfigError
from vprlab.utils.instantiate import build
from vprlab.utils.resolvers import cpus

# Keys of the dataset config that describe how batches are made, not the dataset itself.
LOADER_KEYS = (
    "image_size", "places_per_batch", "num_workers", "pin_memory", "persistent_workers",
    "prefetch_factor", "randaugment_ops", "randaugment_magnitude", "fast_decode", "interpolation", "batch_order",
    "drop_last",
)
# What a dataset config that leaves a key out gets (a hand-written config, an older stored one): the
# values conf/dataset/gsv_cities.yaml sets, so a missing key means what the YAML says and nothing else
# (tests/test_config_defaults.py keeps the two equal). image_size has none: the YAML takes it from
# the backbone (${backbone.train_image_size}), so a config must set it.
LOADER_DEFAULTS = {
    # num_workers: ${vprlab.cpus:8} in the YAML, the same rule here.
    "places_per_batch": 160, "num_workers": cpus(8), "pin_memory": True, "persistent_workers": True,
    "prefetch_factor": 4, "randaugment_ops": 3, "randaugment_magnitude": 15, "fast_decode": False,
    "decoder": "torchvision", "interpolation": "bicubic", "batch_order": "city", "drop_last": False,
}


def loader_setting(cfg: DictConfig | Mapping, key: str) -> Any:
    """``cfg[key]`` of a dataset config, or conf/dataset/gsv_cities.yaml's value where the key is missing."""
    return cfg[key] if key in cfg else LOADER_DEFAULTS[key]


def split_dataset_config(cfg: DictConfig | Mapping) -> tuple[dict, dict]:
    """Return (dataset kwargs with ``_target_``, loader settings)."""
    full = to_plain(cfg)
    loader = {k: full.pop(k) for k in LOADER_KEYS if k in full}
    return full, loader


def build_train_loader(
    cfg: DictConfig | Mapping, *, mean: Any, std: Any, seed: int, device_type: str = "cpu", rank: int = 0, world_size: int = 1,
):
    """Build the place dataset, its sampler and the P x K DataLoader.

    Returns ``(loader, sampler, dataset)``; the sampler's ``set_epoch``/``set_start`` make the
    order of places and the images drawn a pure function of (seed, epoch), so resuming from
    a checkpoint continues exactly. ``dataset.batch_order`` chooses city-by-city batches (the
    GSV-Cities recipe) or one shuffle of all places; ``dataset.drop_last`` whether the epoch's last,
    smaller batch is dropped (see :class:`~vprlab.data.samplers.PlaceSampler`). Under DDP each of
    ``world_size`` ranks gets its own batches of ``places_per_batch`` places. With
    ``dataset.decoder=device`` the loader yields still-encoded images: the batch's
    ``.to(device)`` decodes and transforms them there (see :mod:`vprlab.data.decoding`).
    Images come as uint8 [P*K, 3, H, W]: the train transform's last two steps, float conversion and
    normalisation with ``mean``/``std``, are ``loader.normalize`` (a ``DeviceNormalize``), which the
    trainer applies after ``.to(device)`` (4x less data to collate, pass between processes and copy).
    """
    from vprlab.data.decoding import check_decoder
    from vprlab.data.samplers import BATCH_ORDERS, PlaceSampler, collate_places
    from vprlab.data.transforms import DeviceNormalize, train_transform

    dataset_cfg, loader_cfg = split_dataset_config(cfg)
    if loader_cfg.get("image_size") is None:
        raise ConfigError("dataset.image_size is not set; conf/dataset/*.yaml set it to ${backbone.train_image_size}")
    image_size = _size(loader_cfg["image_size"])
    decoder = check_decoder(loader_setting(dataset_cfg, "decoder"))
    transform = train_transform(
        image_size,
        randaugment_ops=loader_setting(loader_cfg, "randaugment_ops"),
        randaugment_magnitude=loader_setting(loader_cfg, "randaugment_magnitude"),
        mean=mean, std=std, interpolation=loader_setting(loader_cfg, "interpolation"),
        normalize=False,  # uint8 batches: the trainer normalises on the device (DeviceNormalize)
    )
    fast_decode = bool(loader_setting(loader_cfg, "fast_decode"))
    if fast_decode and decoder != "pil":
        raise ConfigError(
            f"dataset.fast_decode (reduced-scale JPEG decoding) works with dataset.decoder=pil only, "
            f"not {decoder!r}; turn one of them off"
        )
    draft = {"draft_size": image_size} if fast_decode else {}
    dataset = build(dataset_cfg, transform=transform, seed=seed, **draft)
    places_per_batch = int(loader_setting(loader_cfg, "places_per_batch"))
    if places_per_batch < 2:
        raise ConfigError(f"dataset.places_per_batch={places_per_batch}: a metric-learning batch needs at least 2 places")
    if len(dataset) // world_size < places_per_batch:
        per_rank = f" ({len(dataset) // world_size} per rank on {world_size} ranks)" if world_size > 1 else ""
        raise ConfigError(
            f"dataset has {len(dataset)} places with at least {dataset_cfg.get('min_img_per_place', '?')} images{per_rank}, "
            f"fewer than dataset.places_per_batch={places_per_batch}; lower places_per_batch or add cities"
        )
    batch_order = loader_setting(loader_cfg, "batch_order")
    if batch_order not in BATCH_ORDERS:
        raise ConfigError(
            f"dataset.batch_order={batch_order!r}; use city (places of one city per batch, the GSV-Cities "
            f"recipe) or shuffled (all places shuffled together)"
        )
    drop_last = loader_setting(loader_cfg, "drop_last")
    if not isinstance(drop_last, bool):
        raise ConfigError(f"dataset.drop_last={drop_last!r}; use true or false")
    city_order = batch_order == "city"
    if city_order and not hasattr(dataset, "place_cities"):
        raise ConfigError(
            f"dataset.batch_order=city needs the city of every place, which {type(dataset).__name__} does not give "
            "(a place_cities array, as GSVCitiesDataset has); set dataset.batch_order=shuffled"
        )
    sampler = PlaceSampler(
        len(dataset), seed=seed, batch_order=batch_order, batch_size=places_per_batch, drop_last=drop_last,
        cities=dataset.place_cities if city_order else None,
        image_counts=dataset.place_image_counts if city_order else None,
        num_replicas=world_size, rank=rank,
    )
    num_workers = int(loader_setting(loader_cfg, "num_workers"))
    loader = DataLoader(
        dataset,
        batch_size=places_per_batch,
        sampler=sampler,
        collate_fn=collate_places,
        drop_last=False,  # the sampler has already cut each rank's share into batches (its drop_last)
        num_workers=num_workers,
        pin_memory=bool(loader_setting(loader_cfg, "pin_memory")) and device_type == "cuda",
        persistent_workers=bool(loader_setting(loader_cfg, "persistent_workers")) and num_workers > 0,
        prefetch_factor=loader_setting(loader_cfg, "prefetch_factor") if num_workers > 0 else None,
    )
    loader.normalize = DeviceNormalize(mean, std)  # uint8 batch on the device -> the model's input
    return loader, sampler, dataset


def build_benchmarks(cfg: DictConfig | Mapping | None) -> list:
    """Build every benchmark selected in the ``benchmark`` group (a mapping name -> config)."""
    if cfg is None:
        return []
    benchmarks = []
    for key, node in cfg.items():
        if node is None:
            continue
        benchmarks.append(build(node))
    return benchmarks


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))
