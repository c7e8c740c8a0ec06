"""A tiny GSV-Cities tree in the released layout, written by hand (independently of the
generator) so the reader is checked against the real naming convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEADER = "place_id,year,month,northdeg,city_id,lat,lon,panoid\n"

# city -> place_id -> number of images. London place 2 has too few images (dropped at min 4).
LAYOUT = {"London": {0: 4, 1: 4, 2: 2}, "Boston": {0: 5, 7: 4}}
COORDS = {"London": ("51.5074", "-0.1278"), "Boston": ("42.36", "-71.0589")}


def pixel_value(city: str, place_id: int, index: int) -> int:
    """Each image of LAYOUT is one flat grey level, so a test can tell which images were drawn."""
    return 20 + 10 * (list(LAYOUT).index(city) * 10 + place_id) + index


def write_gsv_tree(root: Path, size: int = 16, layout: dict[str, dict[int, int]] | None = None) -> Path:
    """Write ``layout`` (city -> place_id -> number of images; LAYOUT by default). Cities outside
    LAYOUT get made-up coordinates and grey levels that need not tell images apart."""
    layout = LAYOUT if layout is None else layout
    (root / "Dataframes").mkdir(parents=True)
    for city, places in layout.items():
        lat, lon = COORDS.get(city, ("10.5", "20.25"))
        lines = [HEADER]
        (root / "Images" / city).mkdir(parents=True)
        for place_id, count in places.items():
            for i in range(count):
                year, month, northdeg, panoid = 2010 + i, 1 + i, 5 * i, f"pano-{city}_{place_id}x{i}"
                lines.append(f"{place_id},{year},{month},{northdeg},{city},{lat},{lon},{panoid}\n")
                # the released naming: <city>_<place:07>_<year:04>_<month:02>_<northdeg:03>_<lat>_<lon>_<panoid>.jpg
                name = f"{city}_{place_id:07d}_{year:04d}_{month:02d}_{northdeg:03d}_{lat}_{lon}_{panoid}.jpg"
                value = pixel_value(city, place_id, i) if layout is LAYOUT else (37 * place_id + 11 * i) % 256
                image = Image.fromarray(np.full((size, size, 3), value, np.uint8))
                image.save(root / "Images" / city / name, quality=95)
        (root / "Dataframes" / f"{city}.csv").write_text("".join(lines))
    return root
