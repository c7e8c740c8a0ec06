"""Format raw dataset downloads into exactly the layout the benchmark configs read.

:data:`FORMATTERS` maps a dataset name (the name of its ``conf/benchmark`` / ``conf/dataset`` config)
to ``fn(raw_dir, out_dir) -> FormatResult``: ``raw_dir`` is the folder holding the download as its
source ships it, ``out_dir`` the folder the config's ``root`` then points at. Several names share one
function where one root serves several configs (SVOX conditions, SF-XL v1/v2); the catalog
(:mod:`vprlab.data.sources`, ``DataSource.formatter``) names which one formats each download. Raw files are never
changed: images are hard-linked into ``out_dir`` (copied across file systems) or, where
VPR-datasets-downloader re-encodes them (AmsterTime and Tokyo 24/7 database PNGs, Tokyo queries),
written anew. Nothing is overwritten: a non-empty output folder, or existing ``.npy`` lists of the
same benchmark, are refused. A missing or malformed raw file is a :class:`~vprlab.utils.errors.UserError`
naming the raw folder and the file expected. What each source needs: docs/data_formats.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vprlab.data.formatters._common import FormatResult, downloader_name, latlon_to_utm
from vprlab.data.formatters.folder_sets import (
    format_amstertime,
    format_baidu,
    format_eynsham,
    format_gsv_cities,
    format_nordland_10frames,
    format_sf_landmark,
    format_sfxl,
    format_st_lucia,
    format_svox,
)
from vprlab.data.formatters.mat_sets import (
    format_pitts30k_test,
    format_pitts30k_val,
    format_pitts250k_test,
    format_tokyo247,
)
from vprlab.data.formatters.msls import format_msls_challenge, format_msls_val, format_msls_val_all
from vprlab.data.formatters.vpr_bench import format_nordland, format_sped

__all__ = ["FORMATTERS", "FormatResult", "downloader_name", "latlon_to_utm"]

FORMATTERS: dict[str, Callable[[Path, Path], FormatResult]] = {
    "gsv_cities": format_gsv_cities,
    "msls_val": format_msls_val,
    "msls_val_all": format_msls_val_all,
    "msls_challenge": format_msls_challenge,
    "pitts30k_val": format_pitts30k_val,
    "pitts30k_test": format_pitts30k_test,
    "pitts250k_test": format_pitts250k_test,
    "tokyo247": format_tokyo247,
    "nordland": format_nordland,
    "nordland_10frames": format_nordland_10frames,
    "sped": format_sped,
    "amstertime": format_amstertime,
    "eynsham": format_eynsham,
    "st_lucia": format_st_lucia,
    "baidu": format_baidu,
    "sf_landmark": format_sf_landmark,
    "sfxl_v1": format_sfxl,
    "sfxl_v2": format_sfxl,
    "svox_all": format_svox,
    "svox_night": format_svox,
    "svox_overcast": format_svox,
    "svox_rain": format_svox,
    "svox_snow": format_svox,
    "svox_sun": format_svox,
}
