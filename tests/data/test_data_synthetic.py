from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprlab.data.benchmark_readers import load_npy_benchmark
from vprlab.data.gsv_cities import GSVCitiesDataset
from vprlab.data.synthetic import (
    MARKER_NAME,
    SyntheticConfig,
    generate_synthetic,
    main,
    render_place,
)

TINY = dict(num_train_places=6, images_per_place=4, num_cities=2, num_bench_places=3,
            bench_db_per_place=1, bench_queries_per_place=2, image_size=(32, 40), seed=11)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != MARKER_NAME}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "synthetic", **TINY)


def test_training_data_reads_as_gsv_cities(tiny):
    assert tiny.generated and tiny.cities == ["SynthCity0", "SynthCity1"]
    ds = GSVCitiesDataset(tiny.gsv_root, tiny.cities, img_per_place=4, min_img_per_place=4)
    assert ds.num_places == 6 and ds.num_images == 24 == tiny.num_train_images
    assert len(set(ds.labels.tolist())) == 6
    images, labels = ds[(0, 1)]
    assert images.shape == (4, 3, 32, 40) and len(set(labels.tolist())) == 1
    with Image.open(ds.place_image_paths(0)[0]) as img:
        assert img.format == "JPEG" and img.size == (40, 32)


def test_benchmark_reads_as_npy_with_positives_of_the_same_place(tiny):
    b = load_npy_benchmark(tiny.benchmark_root, tiny.benchmark_name)
    assert (b.num_db, b.num_queries) == (3, 6) == (tiny.num_db_images, tiny.num_query_images)
    assert [p.tolist() for p in b.positives] == [[0], [0], [1], [1], [2], [2]]
    assert all(Path(p).is_file() for p in b.db_paths + b.query_paths)
    raw = np.load(Path(tiny.benchmark_root) / "synthetic_gt.npy", allow_pickle=True)
    assert raw.dtype == object  # the ragged layout of the released ground-truth files


def test_same_config_gives_identical_bytes(tiny, tmp_path):
    again = generate_synthetic(tmp_path / "again", **TINY)
    assert _files(again.root) == _files(tiny.root)


def test_other_seed_gives_other_images(tiny, tmp_path):
    other = generate_synthetic(tmp_path / "other", **{**TINY, "seed": 12})
    assert _files(other.root) != _files(tiny.root)


def test_same_config_is_not_regenerated_and_another_config_replaces_the_old_files(tmp_path):
    root = tmp_path / "syn"
    first = generate_synthetic(root, **TINY)
    stamp = (root / "gsv" / "Dataframes" / "SynthCity0.csv").stat().st_mtime_ns
    second = generate_synthetic(root, **TINY)
    assert not second.generated and second.num_train_images == first.num_train_images
    assert (root / "gsv" / "Dataframes" / "SynthCity0.csv").stat().st_mtime_ns == stamp

    third = generate_synthetic(root, **{**TINY, "num_train_places": 4, "num_cities": 1, "num_bench_places": 2})
    assert third.generated
    assert not (root / "gsv" / "Dataframes" / "SynthCity1.csv").exists()  # nothing stale left
    assert len(list((root / "gsv" / "Images").rglob("*.jpg"))) == 16
    assert len(list((root / "benchmark").rglob("*.jpg"))) == 6
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["status"] == "complete" and marker["config"]["num_train_places"] == 4


def test_an_interrupted_run_is_cleaned_up(tmp_path):
    root = tmp_path / "syn"
    generate_synthetic(root, **TINY)
    marker = json.loads((root / MARKER_NAME).read_text())
    (root / MARKER_NAME).write_text(json.dumps({**marker, "status": "incomplete"}))
    (root / "gsv" / "Images" / "SynthCity0" / "stale.jpg").write_bytes(b"x")
    assert generate_synthetic(root, **TINY).generated
    assert not (root / "gsv" / "Images" / "SynthCity0" / "stale.jpg").exists()


def test_folders_it_did_not_write_are_never_deleted(tmp_path):
    (tmp_path / "gsv").mkdir()
    (tmp_path / "gsv" / "precious.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_synthetic(tmp_path, **TINY)
    assert (tmp_path / "gsv" / "precious.jpg").exists()


def test_unknown_parameters_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="num_places"):
        generate_synthetic(tmp_path, num_places=3)
    with pytest.raises(ValueError, match="num_cities=3 exceeds num_train_places=2"):
        SyntheticConfig(num_train_places=2, num_cities=3)


@pytest.mark.parametrize("image_size", [(24, 32), (120, 160)])
def test_many_scenes_render_without_degenerate_shapes(image_size):
    cfg = SyntheticConfig(image_size=image_size, seed=5)
    for place in range(25):
        (jpeg,) = render_place(cfg, 0, place, 1)
        assert jpeg[:2] == b"\xff\xd8"


def test_captures_of_one_place_vary_and_colour_does_not_identify_it():
    cfg = SyntheticConfig(image_size=(48, 64), seed=0)
    captures = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float64)
                for b in render_place(cfg, 1, 0, 6)]
    means = np.array([c.reshape(-1, 3).mean(0) for c in captures])
    # lighting and colour casts move the mean colour of one place's captures a lot
    assert np.ptp(means, axis=0).max() > 40


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    main(["--root", str(tmp_path / "cli"), "--num-train-places", "2", "--images-per-place", "2",
          "--num-cities", "1", "--num-bench-places", "2", "--image-size", "24", "32"])
    out = capsys.readouterr().out
    assert "generated" in out and "SynthCity0" in out and "db=2" in out and "queries=4" in out
    main(["--root", str(tmp_path / "cli"), "--num-train-places", "2", "--images-per-place", "2",
          "--num-cities", "1", "--num-bench-places", "2", "--image-size", "24", "32"])
    assert "already up to date" in capsys.readouterr().out
