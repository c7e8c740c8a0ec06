"""The pretrained config group, the reproduce recipes (conf/recipe/, evaluate.py only) and the paper numbers they compare with."""

from __future__ import annotations

import csv

import pytest
from conftest import CONF, SHARED, compose_config
from omegaconf import OmegaConf
from rich.console import Console

from vprlab.pretrained import RELEASED_MODELS, released_model
from vprlab.reports.paper import (
    compare_with_paper,
    paper_results,
)
from vprlab.reports.published import PAPER_BENCHMARKS, paper_benchmark, published_results

REPRODUCE = {"reproduce_boq_resnet50": "boq_resnet50", "reproduce_boq_dinov2": "boq_dinov2"}


@pytest.mark.parametrize("name", sorted(RELEASED_MODELS))
def test_pretrained_options_name_the_released_models(name, tmp_path) -> None:
    cfg = compose_config("evaluate", [f"pretrained={name}", f"pretrained.path={tmp_path / 'w.pth'}", f"paths.output_dir={tmp_path}"])
    assert cfg.pretrained.name == name and cfg.pretrained.path == str(tmp_path / "w.pth")
    assert compose_config("evaluate", [f"paths.output_dir={tmp_path}"]).get("pretrained") is None
    assert set(RELEASED_MODELS) <= {p.stem for p in (CONF / "pretrained").glob("*.yaml")}


def test_pretrained_configs_are_the_registry() -> None:
    """conf/pretrained/ holds one file per published model, as experiments/pretrained_configs.py writes it."""
    from vprlab.pretrained import PUBLISHED_MODELS
    from vprlab.pretrained.catalog import config_yaml

    assert sorted(p.stem for p in (CONF / "pretrained").glob("*.yaml")) == sorted(PUBLISHED_MODELS)
    for name, spec in PUBLISHED_MODELS.items():
        assert (CONF / "pretrained" / f"{name}.yaml").read_text() == config_yaml(spec), f"rerun experiments/pretrained_configs.py ({name})"


def _recipe_benchmarks(recipe: str) -> list[str]:
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "recipe" / f"{recipe}.yaml").defaults)
    return next(entry["override /benchmark"] for entry in defaults if "override /benchmark" in entry)


@pytest.mark.parametrize("recipe", sorted(REPRODUCE))
def test_reproduce_recipe_covers_the_papers_benchmarks(recipe) -> None:
    model = REPRODUCE[recipe]
    published = {row["benchmark"] for row in paper_results() if row["model"] == model}
    benchmarks = _recipe_benchmarks(recipe)
    assert len(set(benchmarks)) == len(benchmarks)
    assert all(paper_benchmark(b) in published for b in benchmarks), benchmarks
    # Every published benchmark with a config name is run; SF-Landmark has no config.
    expected = {name for name, paper in PAPER_BENCHMARKS.items() if paper in published} - {"sf_landmark"}
    assert set(benchmarks) == expected


@pytest.mark.parametrize("recipe", sorted(REPRODUCE))
def test_reproduce_recipe_composes_for_evaluate(recipe, tmp_path) -> None:
    missing = [b for b in _recipe_benchmarks(recipe) if not (CONF / "benchmark" / f"{b}.yaml").is_file()]
    if missing:
        pytest.skip(f"benchmark configs not present yet: {missing}")
    cfg = compose_config("evaluate", [f"recipe={recipe}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert released_model(cfg.pretrained.name).paper_model == cfg.compare_with_paper == REPRODUCE[recipe]
    assert list(cfg.benchmark) == _recipe_benchmarks(recipe)
    assert cfg.pretrained.path is None


def test_paper_results_ship_with_the_package() -> None:
    rows = paper_results()
    assert len(rows) == 32 and {row["model"] for row in rows} == {"boq_resnet50", "boq_dinov2"}
    pitts = next(r for r in rows if r["model"] == "boq_dinov2" and r["benchmark"] == "Pitts30k-test")
    assert (pitts["R@1"], pitts["R@5"], pitts["R@10"], pitts["R@20"]) == (93.7, 97.1, 97.9, 98.5)
    assert all(row["source"].startswith("BoQ README") for row in rows)
    reference = SHARED / "reference" / "boq_paper_results.csv"
    if reference.is_file():  # the packaged rows are the reference file's, unchanged (read here without vprlab)
        with reference.open(newline="") as f:
            expected = [{k: float(v) if k.startswith("R@") else v for k, v in r.items()} for r in csv.DictReader(f)]
        assert [{k: row[k] for k in expected[0]} for row in rows] == expected


def test_benchmark_names_map_to_the_papers() -> None:
    assert paper_benchmark("nordland") == "Nordland*" and paper_benchmark("nordland_10frames") == "Nordland**"
    assert paper_benchmark("Pitts30k-test") == "Pitts30k-test" == paper_benchmark("pitts30k_test")
    assert paper_benchmark("st_lucia") == "St-Lucia" and paper_benchmark("svox_night") == "SVOX-night"
    assert paper_benchmark("tokyo247") == "Tokyo 24/7" and paper_benchmark("synthetic") is None
    # Every benchmark of the published numbers has a paper name, and every paper name a config.
    published = {row["benchmark"] for row in published_results()}
    assert {row["benchmark"] for row in paper_results()} <= published <= set(PAPER_BENCHMARKS.values())
    assert all((CONF / "benchmark" / f"{name}.yaml").is_file() for name in PAPER_BENCHMARKS)


def test_compare_with_paper_rows_and_markdown(tmp_path) -> None:
    rows = [
        {"model": "m", "benchmark": "msls_val", "R@1": 94.0, "R@5": 96.8, "R@10": 97.5, "R@20": 97.7},
        {"model": "m", "benchmark": "msls_challenge", "R@1": None, "R@5": None, "R@10": None, "R@20": None},
        {"model": "m", "benchmark": "tokyo247", "R@1": 90.0, "R@5": 95.0, "R@10": 96.0, "R@20": 97.0},
    ]
    console = Console(width=200, record=True)
    comparison = compare_with_paper(rows, "boq_dinov2_12288", out_dir=tmp_path, console=console)  # released name -> boq_dinov2
    msls, challenge, tokyo = comparison
    assert msls["paper R@1"] == 93.8 and msls["delta R@1"] == pytest.approx(0.2) and msls["delta R@5"] == pytest.approx(0.0)
    assert challenge["paper benchmark"] == "MSLS-Challenge" and challenge["paper R@1"] == 79.0 and challenge["delta R@1"] is None
    assert tokyo["paper benchmark"] is None and tokyo["paper R@1"] is None
    text = console.export_text()
    assert "94.0 / 93.8 (+0.2)" in text and "paper benchmarks not evaluated here: Pitts30k-test" in text
    markdown = (tmp_path / "paper_comparison_boq_dinov2.md").read_text()
    assert "| msls_val | MSLS-val | 94.0 | 93.8 | +0.2 |" in markdown
    # No published number is not "not measured": the cells say which.
    assert "| tokyo247 | - | 90.0 |  |  | 95.0 |  |  | 96.0 |  |  | 97.0 |  |  | no published number |" in markdown
    assert "| msls_challenge | MSLS-Challenge | - | 79.0 | - |" in markdown and "[1] BoQ README (github.com/amaralibey/Bag-of-Queries" in markdown
    assert "90.0 / no published number" in text
    with pytest.raises(ValueError, match=r"compare_with_paper='netvlad': neither a published model nor a model of published_results.csv; "
                                         r"the models with published numbers are \['boq_dinov2_12288', .*\(BoQ also as \['boq_dinov2', 'boq_resnet50'\]\)"):
        compare_with_paper(rows, "netvlad", console=console)
