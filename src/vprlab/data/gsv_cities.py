"""GSV-Cities training set: one item is a *place*, returned as K images of it.

On-disk layout (as released, https://github.com/amaralibey/gsv-cities)::

    <root>/Dataframes/<City>.csv   columns: place_id, year, month, northdeg, city_id, lat, lon, panoid
    <root>/Images/<city_id>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

``lat`` and ``lon`` appear in file names as Python prints the float read from the csv
(``str(51.5074)``), which is how the release names its files.

Place ids restart at 0 in every city, so the label of a place is
``city_index * label_stride + place_id`` with ``label_stride = 10**5`` (the release's
convention: place 13 of the second city is 100013), widened automatically if a city
ever has place ids of 10**5 or more, so labels never collide across cities.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from vprlab.data.decoding import (
    EncodedPlace,
    check_decoder,
    load_for_device,
    load_tensor,
    uint8_to_float,
)
from vprlab.utils.errors import DataError, MissingFileError

CSV_COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
LABEL_STRIDE = 10**5
log = logging.getLogger(__name__)

HOW_TO_GET_DATA = (
    "download GSV-Cities (https://github.com/amaralibey/gsv-cities, also on Kaggle as "
    "'gsv-cities') and point the dataset root at the folder holding Dataframes/ and Images/, "
    "or run `make quickstart` to generate a small synthetic set in the same layout"
)

PlaceKey = int | tuple[int, int]


def gsv_image_name(city_id: str, place_id: int, year: int, month: int, northdeg: int,
                   lat: float, lon: float, panoid: str) -> str:
    """File name of one GSV-Cities image (``place_id`` is the per-city id, not the label)."""
    return (
        f"{city_id}_{int(place_id):07d}_{int(year):04d}_{int(month):02d}_{int(northdeg):03d}"
        f"_{lat}_{lon}_{panoid}.jpg"
    )


BAD_IMAGE_POLICIES = ("fail", "skip")


def _load_image(path: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as RGB. With ``draft_size`` (H, W), a JPEG is decoded by libjpeg at the
    smallest 1/2, 1/4 or 1/8 scale that is still at least that size: the later resize then
    starts from fewer pixels, and decoding (the input pipeline's main cost) is several times faster."""
    with Image.open(path) as img:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", (draft_size[1], draft_size[0]))
        return img.convert("RGB")


class GSVCitiesDataset(Dataset):
    """Places of one or more GSV-Cities cities; ``dataset[key] -> (images [K,3,H,W], labels [K])``.

    ``key`` is a place index or ``(place_index, draw_seed)``. With a draw seed, both the
    choice of the K images and the transform's randomness (RandAugment draws from torch's
    global RNG) are a pure function of ``(seed, place_index, draw_seed)``, so a run that
    is interrupted and resumed sees exactly the same batches. A bare index draws its seed
    from torch's global RNG (reproducible under ``seed_everything``).

    Args:
        root: folder holding ``Dataframes/`` and ``Images/``.
        cities: city names (csv stems), a single name, or ``None`` for every csv in ``Dataframes/``.
        img_per_place: K, images returned per place.
        min_img_per_place: places with fewer images are dropped (must be >= K).
        transform: PIL image -> tensor [3, H, W]; ``None`` gives an unnormalised ToTensor.
        seed: mixed into every draw, so two datasets with different seeds draw differently.
        bad_image_policy: what an unreadable or corrupt image does: ``fail`` raises an error
            naming the file; ``skip`` logs it, counts it in ``bad_images`` and uses another
            image of the same place instead (an error only if the place has too few readable ones).
        draft_size: (H, W) the images are resized to next; JPEGs are then decoded at a reduced
            scale no smaller than it (``dataset.fast_decode=true`` sets it to the train size).
            PIL decoding only.
        decoder: ``torchvision`` (default: uint8 tensors to ``transform``, as the original BoQ
            code decodes), ``pil`` (PIL images to ``transform``) or ``device`` (items hold the encoded bytes, an
            :class:`~vprlab.data.decoding.EncodedPlace`, decoded and transformed on the training
            device by ``.to(device)``); see :mod:`vprlab.data.decoding`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cities: Sequence[str] | str | None,
        img_per_place: int = 4,
        min_img_per_place: int = 4,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        seed: int = 0,
        bad_image_policy: str = "fail",
        draft_size: Sequence[int] | None = None,
        decoder: str = "torchvision",
    ) -> None:
        super().__init__()
        self.decoder = check_decoder(decoder)
        if draft_size is not None and decoder != "pil":
            raise DataError(f"draft_size (reduced-scale JPEG decoding) needs decoder='pil', got decoder={decoder!r}")
        if bad_image_policy not in BAD_IMAGE_POLICIES:
            raise DataError(f"bad_image_policy={bad_image_policy!r}; use one of {BAD_IMAGE_POLICIES}")
        self.bad_image_policy = bad_image_policy
        self.draft_size = None if draft_size is None else (int(draft_size[0]), int(draft_size[1]))
        # Paths found unreadable in this process (each DataLoader worker keeps its own set).
        self.bad_images: set[str] = set()
        if img_per_place < 1:
            raise DataError(f"img_per_place must be >= 1, got {img_per_place}")
        if img_per_place > min_img_per_place:
            raise DataError(
                f"img_per_place={img_per_place} is larger than min_img_per_place={min_img_per_place}: "
                "a kept place could have fewer images than a batch needs; raise min_img_per_place "
                f"to at least {img_per_place}"
            )
        self.root = Path(root)
        self.img_per_place = img_per_place
        self.min_img_per_place = min_img_per_place
        self.transform = transform
        self.seed = int(seed)
        self.cities = self._resolve_cities(cities)

        frames = [self._read_city(city) for city in self.cities]
        max_place_id = max((int(df["place_id"].max()) for df in frames if len(df)), default=0)
        self.label_stride = LABEL_STRIDE
        while max_place_id >= self.label_stride:
            self.label_stride *= 10

        paths: list[str] = []
        labels: list[int] = []
        counts: list[int] = []
        for city_index, df in enumerate(frames):
            df = df.assign(label=df["place_id"].astype(np.int64) + city_index * self.label_stride)
            # Keep csv order inside a place (stable sort) so the draw depends only on the data.
            df = df.sort_values("label", kind="stable")
            sizes = df.groupby("label", sort=False)["label"].transform("size")
            df = df[sizes >= min_img_per_place]
            images_dir = self.root / "Images"
            paths += [
                str(images_dir / r.city_id / gsv_image_name(r.city_id, r.place_id, r.year, r.month,
                                                             r.northdeg, r.lat, r.lon, r.panoid))
                for r in df.itertuples(index=False)
            ]
            place_labels, place_counts = np.unique(df["label"].to_numpy(), return_counts=True)
            labels += place_labels.tolist()
            counts += place_counts.tolist()

        if not labels:
            raise DataError(
                f"no place in {self.cities} under {self.root} has at least min_img_per_place="
                f"{min_img_per_place} images; lower min_img_per_place or check the csv files"
            )
        # numpy arrays rather than lists of str: DataLoader workers fork the dataset and
        # touching python objects would copy their pages (the memory "leak" of big lists).
        self._paths = np.array(paths)
        self._labels = np.array(labels, dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # ------------------------------------------------------------------ reading
    def _resolve_cities(self, cities: Sequence[str] | str | None) -> list[str]:
        if not self.root.is_dir():
            raise MissingFileError(f"GSV-Cities root {self.root} does not exist; {HOW_TO_GET_DATA}")
        frames_dir = self.root / "Dataframes"
        if not frames_dir.is_dir():
            raise MissingFileError(
                f"{frames_dir} does not exist (expected <root>/Dataframes/<City>.csv); {HOW_TO_GET_DATA}"
            )
        if cities is None:
            found = sorted(p.stem for p in frames_dir.glob("*.csv") if not p.name.startswith("."))  # not macOS ._x.csv
            if not found:
                raise MissingFileError(f"no <City>.csv in {frames_dir}; {HOW_TO_GET_DATA}")
            return found
        if isinstance(cities, str):
            cities = [cities]
        cities = list(cities)
        if not cities:
            raise DataError("cities is empty; name at least one city (or pass None for all)")
        if len(set(cities)) != len(cities):
            raise DataError(f"cities has duplicates: {cities}")
        return cities

    def _read_city(self, city: str) -> pd.DataFrame:
        csv = self.root / "Dataframes" / f"{city}.csv"
        if not csv.is_file():
            available = sorted(p.stem for p in csv.parent.glob("*.csv") if not p.name.startswith("."))
            raise MissingFileError(
                f"city csv {csv} does not exist (cities available there: {available or 'none'}); "
                f"fix the cities list or {HOW_TO_GET_DATA}"
            )
        df = pd.read_csv(csv)
        missing = [c for c in CSV_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{csv} lacks columns {missing}; a GSV-Cities csv has {list(CSV_COLUMNS)}")
        if len(df) and int(df["place_id"].min()) < 0:
            raise DataError(f"{csv} has negative place_id values; place ids must be >= 0")
        return df

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self._labels)

    @property
    def num_places(self) -> int:
        return len(self._labels)

    @property
    def num_images(self) -> int:
        return int(self._offsets[-1])

    @property
    def labels(self) -> np.ndarray:
        """Label of every kept place, in place-index order."""
        return self._labels

    @property
    def place_cities(self) -> np.ndarray:
        """Index (into :attr:`cities`) of every kept place's city, in place-index order: the places
        of a city are consecutive and the cities come in the order of :attr:`cities`."""
        return self._labels // self.label_stride

    @property
    def place_image_counts(self) -> np.ndarray:
        """Number of images of every kept place, in place-index order."""
        return np.diff(self._offsets)

    def place_image_paths(self, place_index: int) -> list[str]:
        lo, hi = self._offsets[place_index], self._offsets[place_index + 1]
        return [str(p) for p in self._paths[lo:hi]]

    # ------------------------------------------------------------------ items
    def __getitem__(self, key: PlaceKey) -> tuple[torch.Tensor | EncodedPlace, torch.Tensor]:
        if isinstance(key, (tuple, list)):
            place_index, draw_seed = int(key[0]), int(key[1])
        else:
            place_index = int(key)
            draw_seed = int(torch.randint(0, 2**31 - 1, ()).item())
        if not 0 <= place_index < len(self):
            raise IndexError(f"place index {place_index} out of range for {len(self)} places")

        rng = np.random.default_rng([self.seed, place_index, draw_seed])
        paths = self.place_image_paths(place_index)
        # A full permutation: the first K are the draw, the rest are stand-ins for unreadable images.
        order = rng.permutation(len(paths))
        transform_seed = int(rng.integers(0, 2**63 - 1))
        labels = torch.full((self.img_per_place,), int(self._labels[place_index]), dtype=torch.long)
        if self.decoder == "device":
            paths_read, data = zip(*self._read_place([paths[i] for i in order]))
            # The transform itself, not a bound method: a bound method would pickle the whole dataset.
            transform = self.transform or uint8_to_float
            return EncodedPlace(list(data), list(paths_read), transform_seed, transform, self.bad_image_policy), labels

        # fork_rng: seed the transforms without disturbing the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(transform_seed)
            images = [self._transform(image) for _, image in self._read_place([paths[i] for i in order])]
        return torch.stack(images), labels

    def _load(self, path: str) -> Image.Image | torch.Tensor:
        if self.decoder == "pil":
            return _load_image(path, self.draft_size)
        if self.decoder == "torchvision":
            return load_tensor(path)
        return load_for_device(path)  # a plain JPEG's bytes, decoded later on the device

    def _read_place(self, candidates: Sequence[str]) -> list[tuple[str, Image.Image | torch.Tensor]]:
        """(path, image) of the first ``img_per_place`` readable images among ``candidates`` (in order)."""
        images: list[tuple[str, Image.Image | torch.Tensor]] = []
        for path in candidates:
            if len(images) == self.img_per_place:
                break
            path = str(path)
            try:
                images.append((path, self._load(path)))
            except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for truncated/corrupt files
                if self.bad_image_policy == "fail":
                    raise OSError(
                        f"cannot read training image '{path}' ({type(e).__name__}: {e}); remove or replace it, "
                        "or set dataset.bad_image_policy=skip to use another image of the same place"
                    ) from e
                if path not in self.bad_images:
                    self.bad_images.add(path)
                    log.warning("skipping unreadable image %s (%s); %d bad so far", path, e, len(self.bad_images))
        if len(images) < self.img_per_place:
            raise OSError(
                f"place with images {list(map(str, candidates))[:3]}... has only {len(images)} readable images, "
                f"fewer than img_per_place={self.img_per_place}; fix the files or lower img_per_place"
            )
        return images

    def _transform(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            return self.transform(image)
        if isinstance(image, torch.Tensor):  # uint8 [3, H, W] from the tensor decoders
            return uint8_to_float(image)
        import torchvision.transforms.functional as TF

        return TF.to_tensor(image)

    def __repr__(self) -> str:
        return (
            f"GSVCitiesDataset(root={str(self.root)!r}, cities={self.cities}, places={self.num_places}, "
            f"images={self.num_images}, img_per_place={self.img_per_place})"
        )
