"""Report tables never mix configurations: runs are averaged only when they differ in nothing but the
seed, the reported epoch is one stated rule, heatmaps use a fixed scale, and evaluate.py results are
report inputs like training runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vprlab.reports import collect_runs
from vprlab.reports.cli import main as report
from vprlab.reports.paper import paper_table
from vprlab.reports.tables import (
    methods_report,
    seeds_report,
    settings_table,
    sweep_report,
)


def _config(aggregator: str = "boq", seed: int = 1, lr: float = 1e-3, out: str = "/o", **agg) -> dict:
    target = {"boq": "vprlab.models.aggregators.BoQ", "gem": "vprlab.models.aggregators.GeM"}[aggregator]
    return {
        "seed": seed, "task_name": "train", "paths": {"output_dir": out, "data_dir": "/data"},
        "logger": {"mode": "offline", "name": out.rsplit("/", 1)[-1], "group": "g"},
        "backbone": {"_target_": "vprlab.models.backbones.ResNetBackbone", "model_name": "resnet18",
                     "train_image_size": [96, 128]},
        "aggregator": {"_target_": target, **agg}, "optimizer": {"lr": lr, "weight_decay": 1e-4},
        "trainer": {"max_epochs": 2, "monitor": None}, "dataset": {"num_workers": 2, "root": "/data/gsv"},
        "benchmark": {"synthetic": {"root": "/data/bench"}},
    }


def write_train_run(folder: Path, config: dict, r1_per_epoch: list[float], dim: int = 512, bench: str = "synthetic") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [{"step": 0, "time": 0.0, "model/descriptor_dim": dim, "model/params": 1000}]
    for epoch, r1 in enumerate(r1_per_epoch, start=1):
        lines.append({"step": epoch * 3, "time": float(epoch), "train/img_per_s": 40.0, "epoch": epoch})
        lines.append({"step": epoch * 3, "time": float(epoch), f"{bench}/R@1": r1, f"{bench}/R@5": r1 + 10,
                      f"{bench}/R@10": r1 + 20, f"{bench}/descriptor_dim": dim, "epoch": epoch})
    lines.append({"step": 6, "time": 9.0, "system/peak_mem_mb": 700.0, "system/peak_mem_kind": "cpu_rss_sampled"})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def _grid(root: Path) -> Path:
    """The BoQ 2x2 grid with one seed (the issue's case): four settings, not four seeds."""
    for i, (layers, queries) in enumerate([(1, 8), (1, 16), (2, 8), (2, 16)]):
        job = f"aggregator.num_layers={layers},aggregator.num_queries={queries}"
        write_train_run(root / job, _config(seed=1, out=str(root / job), num_layers=layers, num_queries=queries),
                        [10.0, 2.0 + i], dim=64 * queries)
    return root


def test_a_one_seed_grid_is_four_settings_not_four_seeds(tmp_path):
    runs = collect_runs(_grid(tmp_path / "grid"))
    assert set(runs.attrs["config_keys"]) == {"aggregator.num_layers", "aggregator.num_queries"}
    assert runs["setting"].nunique() == 4
    table = settings_table(runs, ["aggregator"])
    assert len(table) == 4 and list(table["n"]) == [1, 1, 1, 1]
    assert table.attrs["shown"] == ["aggregator", "aggregator.num_layers", "aggregator.num_queries"]
    assert sorted(table["R@1"]) == [2.0, 3.0, 4.0, 5.0]  # never their mean 3.5 as one "boq" row

    assert report(["seeds", str(tmp_path / "grid"), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "seeds.md").read_text()
    assert "| aggregator | aggregator.num_layers | aggregator.num_queries |" in text
    assert "| boq | 2 | 16 | synthetic | 5.0 |" in text and "±" not in text[text.index("| aggregator"):]


def test_seeds_pool_only_runs_that_differ_in_nothing_else(tmp_path):
    root = tmp_path / "runs"
    for seed, r1 in ((1, 40.0), (2, 44.0), (3, 49.0)):
        write_train_run(root / f"seed={seed}", _config(seed=seed, out=str(root / f"seed={seed}"), num_queries=8), [r1])
    write_train_run(root / "lr", _config(seed=1, lr=5e-3, out=str(root / "lr"), num_queries=8), [60.0])
    runs = collect_runs(root)
    assert runs.attrs["config_keys"] == ["optimizer.lr"]  # the seed, output paths and run names never split a setting
    table = settings_table(runs, ["aggregator"]).set_index("optimizer.lr")
    assert table.loc[0.001, "n"] == 3 and table.loc[0.001, "seeds"] == "1,2,3"
    assert table.loc[0.001, "R@1"] == pytest.approx(np.mean([40, 44, 49]))
    assert table.loc[0.001, "R@1 std"] == pytest.approx(np.std([40, 44, 49], ddof=1))
    assert table.loc[0.005, "n"] == 1 and table.loc[0.005, "R@1"] == 60.0


def test_reported_epoch_is_one_stated_rule(tmp_path):
    write_train_run(tmp_path / "runs" / "a", _config(num_queries=8), [70.0, 50.0])
    last = collect_runs(tmp_path / "runs", epoch="last").iloc[0]
    best = collect_runs(tmp_path / "runs", epoch="best").iloc[0]
    assert (last["R@1"], last["epoch"]) == (50.0, 2) and (best["R@1"], best["epoch"]) == (70.0, 1)
    assert "best R@1" not in collect_runs(tmp_path / "runs").columns  # no second, mixed rule
    assert report(["methods", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--epoch", "best"]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Reported epoch: training runs report the epoch with the best monitored metric" in text and "| 70.0 |" in text
    assert "resident set size sampled during the job" in text


def test_sweep_of_mixed_aggregators_never_draws_nan_cells_or_averages_sizes(tmp_path, monkeypatch):
    root = tmp_path / "aggregators"
    write_train_run(root / "aggregator=boq", _config("boq", out="a", num_layers=2, num_queries=16), [30.0], dim=4096)
    write_train_run(root / "aggregator=gem", _config("gem", out="b", p=3.0), [20.0], dim=256)
    write_train_run(root / "aggregator=gem2", _config("gem", out="c", p=4.0), [21.0], dim=256)
    drawn = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda self, X, **kw: drawn.update(kw, X=X) or original(self, X, **kw))
    paths = sweep_report(collect_runs(root), tmp_path / "r")
    assert drawn["vmin"] == 0.0 and drawn["vmax"] == 100.0 and drawn["X"].shape == (1, 1)
    table = pd.read_csv(paths["csv"])
    assert len(table) == 1 and table.loc[0, "descriptor_dim"] == 4096 and table.loc[0, "R@1"] == 30.0
    text = paths["markdown"].read_text()
    assert "nan" not in text and "Left out (no aggregator.num_layers or aggregator.num_queries): aggregator=gem, aggregator=gem2" in text
    assert "fixed 0-100 scale" in text and "R@1 (%) on `synthetic`" in text and "Reported epoch" in text


def test_sweep_cell_holding_two_settings_is_refused_with_the_key(tmp_path, capsys):
    root = tmp_path / "grid"
    write_train_run(root / "a", _config(num_layers=1, num_queries=8), [30.0])
    write_train_run(root / "b", _config(num_layers=1, num_queries=8, lr=5e-3), [40.0])
    with pytest.raises(ValueError, match=r"would average different configurations: inside a cell optimizer\.lr takes 0\.001, 0\.005"):
        sweep_report(collect_runs(root), tmp_path / "r")
    assert report(["sweep", str(root), "--out", str(tmp_path / "r")]) == 2
    assert "optimizer.lr takes" in capsys.readouterr().err
    assert report(["sweep", str(root), "--out", str(tmp_path / "r"), "--where", "optimizer.lr=0.005"]) == 0
    assert "| 1 | 8 | 40.0 |" in (tmp_path / "r" / "report.md").read_text()


def test_compare_shows_what_differs_inside_a_named_group(tmp_path):
    root = tmp_path / "c"
    write_train_run(root / "boq", _config("boq", out="a", num_layers=2), [30.0], dim=4096)
    write_train_run(root / "boq-lr", _config("boq", out="b", num_layers=2, lr=5e-3), [35.0], dim=4096)
    write_train_run(root / "gem", _config("gem", out="c", p=3.0), [20.0], dim=256)
    paths = methods_report(collect_runs(root), tmp_path / "r", by=["aggregator"])
    text = paths["markdown"].read_text()
    assert "| aggregator | optimizer.lr | benchmark |" in text
    assert "| boq | 0.001 | synthetic | 30.0 |" in text and "| boq | 0.005 | synthetic | 35.0 |" in text
    assert seeds_report(collect_runs(root), tmp_path / "s")["markdown"].read_text().count("| boq |") == 2


def _evaluate_folder(folder: Path, rows: list[dict]) -> Path:
    """An evaluate.py run folder as Hydra leaves it: results files and .hydra/config.yaml, no config.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "evaluate", "seed": 1}))
    from vprlab.evaluation.results import write_results

    write_results(rows, folder)
    return folder


def _eval_row(model: str, bench: str, r1: float, h: str = "abc123") -> dict:
    return {"model": model, "checkpoint_hash": h, "benchmark": bench, "image_size": "384x384", "descriptor_dim": 16384,
            "R@1": r1, "R@5": r1 + 3, "R@10": r1 + 4, "protocol": "25 m", "precision": "fp32", "aggregator": "boq"}


def test_report_compare_is_the_old_name_of_report_methods(tmp_path, capsys):
    """`vprlab report compare` (renamed: `vprlab compare` is another tool) still runs, with a one-line notice
    on stderr, and writes what `vprlab report methods` writes."""
    write_train_run(tmp_path / "runs" / "a", _config(num_queries=8), [70.0, 50.0])
    assert report(["methods", str(tmp_path / "runs"), "--out", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().err == ""
    assert report(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "old")]) == 0
    err = capsys.readouterr().err
    assert err == "vprlab report compare is deprecated: it is now `vprlab report methods` (same options and output)\n"
    assert (tmp_path / "old" / "report.md").read_text() == (tmp_path / "new" / "report.md").read_text()
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == sorted(p.name for p in (tmp_path / "new").iterdir())
    with pytest.raises(SystemExit):
        report(["--help"])
    usage = capsys.readouterr().out
    assert "{collect,sweep,methods,paper,seeds}" in usage and "(`compare`: its old name, still accepted)" in usage


def test_paper_reads_evaluate_runs_as_the_readme_says(tmp_path, monkeypatch):
    evaluate = tmp_path / "outputs" / "evaluate"
    _evaluate_folder(evaluate / "runs" / "2026-01-01_10-00-00", [_eval_row("boq_resnet50_16384", "pitts30k_test", 90.4)])
    _evaluate_folder(evaluate / "runs" / "2026-01-01_11-00-00", [_eval_row("boq_resnet50_16384", "msls_val", 91.0)])
    monkeypatch.chdir(tmp_path)
    assert report(["paper", "outputs/evaluate", "--model", "boq_resnet50", "--out", "rep"]) == 0
    text = (tmp_path / "rep" / "paper_boq_resnet50.md").read_text()
    assert "| Pitts30k-test | 92.4 | 90.4 | -2.0 |" in text and "| MSLS-val |" in text
    assert "Ours: `boq_resnet50_16384`, checkpoint_hash abc123, image_size 384x384, protocol 25 m" in text
    assert report(["methods", "outputs/evaluate", "--out", "cmp"]) == 0
    assert report(["seeds", "outputs/evaluate", "--by", "model", "--out", "seeds"]) == 0
    assert report(["collect", "outputs/evaluate", "--out", "col"]) == 0
    assert "abc123" in (tmp_path / "col" / "runs.csv").read_text()


def test_paper_refuses_to_average_several_models(tmp_path, capsys):
    folder = _evaluate_folder(tmp_path / "e", [_eval_row("a", "pitts30k_test", 80.0, "h1"), _eval_row("b", "pitts30k_test", 90.0, "h2")])
    with pytest.raises(ValueError, match=r"2 different settings.*\[model=a, .*\]; \[model=b, "):
        paper_table(collect_runs(folder), "boq_resnet50")
    assert report(["paper", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert "--where" in capsys.readouterr().err
    assert report(["paper", str(folder), "--out", str(tmp_path / "r"), "--where", "model=b"]) == 0
    assert "| Pitts30k-test | 92.4 | 90.0 | -2.4 |" in (tmp_path / "r" / "paper_boq_resnet50.md").read_text()


def test_a_grid_in_the_paper_table_is_refused(tmp_path):
    with pytest.raises(ValueError, match="4 different settings"):
        paper_table(collect_runs(_grid(tmp_path / "grid")), "boq_resnet50")


def test_composed_configs_of_two_seeds_are_one_setting(tmp_path):
    """On the real train.py config: seed, output folder, run name and loader workers never split a setting."""
    from conftest import compose_config
    from omegaconf import OmegaConf

    from vprlab.reports.collect import flatten_config, setting_of

    def setting(*overrides):
        cfg = compose_config("train", ["experiment=quickstart", *overrides])
        return setting_of(flatten_config(OmegaConf.to_container(cfg, resolve=True)))[0]

    one = setting("seed=1", f"paths.output_dir={tmp_path / 'a'}", "logger.name=a", "dataset.num_workers=0")
    assert one == setting("seed=2", f"paths.output_dir={tmp_path / 'b'}", "logger.name=b", "dataset.num_workers=4")
    assert one != setting("seed=1", f"paths.output_dir={tmp_path / 'a'}", "logger.name=a", "dataset.num_workers=0", "optimizer.lr=0.005")
    assert one != setting("seed=1", f"paths.output_dir={tmp_path / 'a'}", "logger.name=a", "dataset.num_workers=0", "trainer.max_epochs=3")
