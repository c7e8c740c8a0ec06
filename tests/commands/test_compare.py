"""`vprlab compare`: released models and vprlab checkpoints on several benchmarks in one table.

Models: the released BoQ-ResNet50 (random weights in its release layout), a tiny BoQ exported in the
release layout (architecture read off the file), and vprlab checkpoints of GeM and MixVPR; all at
32x64 so everything runs in seconds on a CPU."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from conftest import CONF, SHARED, compose_config
from omegaconf import OmegaConf
from release_reference import release_checkpoint

from vprlab.commands import compare
from vprlab.commands.compare import (
    compare_models,
    main,
)
from vprlab.commands.evaluate import run_evaluation
from vprlab.data.benchmark import BenchmarkCountWarning
from vprlab.engine.checkpoint import save_checkpoint
from vprlab.evaluation.settings import EvalSettings
from vprlab.models.vpr_model import build_model
from vprlab.reports import comparison
from vprlab.reports.published import published_for, published_results

SIZE = "[32,64]"
ARCHITECTURES = {
    "gem": ["aggregator=gem"],
    "mixvpr": ["aggregator=mixvpr", "aggregator.in_h=2", "aggregator.in_w=4", "aggregator.out_channels=32", "aggregator.out_rows=2"],
    "boq": ["aggregator=boq_small", "aggregator.num_layers=1"],
}


def _checkpoint(folder: Path, name: str, data_dir: Path) -> Path:
    """A vprlab checkpoint (model + resolved config, as train.py writes) of an untrained tiny model."""
    cfg = compose_config("train", [
        "experiment=synthetic_compare", f"paths.data_dir={data_dir}", f"paths.output_dir={folder}",
        f"backbone.train_image_size={SIZE}", f"backbone.eval_image_size={SIZE}", *ARCHITECTURES[name],
    ])
    torch.manual_seed(len(name))
    model = build_model(cfg.backbone, cfg.aggregator)
    path = folder / name / "checkpoints" / "best.ckpt"
    save_checkpoint(path, {"model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True), "epoch": 1})
    return path


@pytest.fixture(scope="module")
def models(tiny_synthetic, tmp_path_factory):
    from vprlab.pretrained import export_release

    folder = tmp_path_factory.mktemp("models")
    data_dir = tiny_synthetic.root.parent
    ckpts = {name: _checkpoint(folder, name, data_dir) for name in ARCHITECTURES}
    exported, _ = export_release(ckpts["boq"], folder / "boq_tiny_release.pth")
    return {"released": release_checkpoint(tmp_path_factory, "resnet50_16384"), "exported": exported, **ckpts}


def _overrides(data_dir: Path, cache: Path, benchmarks=("synthetic",), *extra: str) -> list[str]:
    sizes = [f"benchmark.{b}.image_size={SIZE}" for b in benchmarks if b != "pitts30k_test"]
    missing = ["benchmark.pitts30k_test.root=/nonexistent/Pittsburgh"] if "pitts30k_test" in benchmarks else []
    return [f"paths.data_dir={data_dir}", f"cache_dir={cache}", "device=cpu", "num_workers=0", "batch_size=16",
            "progress=false", *sizes, *missing, *extra]


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_table_equals_evaluate_py_reuses_its_cache_and_lists_what_was_skipped(models, tiny_synthetic, tmp_path, monkeypatch, capsys):
    data_dir, cache = tiny_synthetic.root.parent, tmp_path / "cache"
    benchmarks = ["synthetic", "pitts30k_test"] + (["real_gardenspoint"] if (SHARED / "data" / "real" / "gardenspoint_sample10").is_dir() else [])
    # evaluate.py first (cache on): the comparison must read the GeM cell from the same cache entry.
    evaluated = {}
    for name in ("gem", "mixvpr"):
        cfg = compose_config("evaluate", _overrides(data_dir, cache, ("synthetic",), f"ckpt_path={models[name]}", "benchmark=[synthetic]",
                                                    f"paths.output_dir={tmp_path / 'eval' / name}"))
        evaluated[name] = run_evaluation(cfg)["synthetic"]
    argv = ["--models", "boq_resnet50_16384", str(models["gem"]), str(models["mixvpr"]), str(models["exported"]),
            "/nowhere/missing.ckpt", "--weights", f"boq_resnet50_16384={models['released']}",
            "--benchmarks", *benchmarks, "--out", str(tmp_path / "out"), "--override", *_overrides(data_dir, cache, benchmarks)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = _read_csv(tmp_path / "out" / "comparison.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    present = [b for b in benchmarks if b != "pitts30k_test"]
    assert len(ok) == 4 * len(present)
    by = {(r["source"], r["benchmark"]): r for r in ok}
    for name in ("gem", "mixvpr"):
        row = by[(str(models[name]), "synthetic")]
        for k in (1, 5, 10, 20):
            assert float(row[f"R@{k}"]) == pytest.approx(evaluated[name][f"R@{k}"])
        assert row["speed measured"] == "first run (cache)"  # evaluate.py filled the cache entry
        assert float(row["img_per_s"]) == pytest.approx(evaluated[name]["extract_img_per_s"])
    dims = {r["source"]: int(r["descriptor_dim"]) for r in ok}
    assert dims == {"boq_resnet50_16384": 16384, str(models["gem"]): 256, str(models["mixvpr"]): 64, str(models["exported"]): 512}
    assert by[("boq_resnet50_16384", "synthetic")]["speed measured"] == "this run"
    # Skips: the missing benchmark for every model, the missing checkpoint on every benchmark, with reasons.
    skipped = {(r["model"], r["benchmark"]): r["reason"] for r in rows if r["status"] == "skipped"}
    assert set(skipped) == {("*", "pitts30k_test"), ("/nowhere/missing.ckpt", "*")}
    assert "/nonexistent/Pittsburgh does not exist" in skipped[("*", "pitts30k_test")]
    assert skipped[("/nowhere/missing.ckpt", "*")] == "file '/nowhere/missing.ckpt' not found"
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "benchmark pitts30k_test: skipped for every model" in markdown and "not evaluated and not counted" in markdown
    assert "skipped: model /nowhere/missing.ckpt: skipped on every benchmark" in printed
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 10_000

    # A second comparison never runs a model: every cell comes from the cache, with the same numbers.
    def refuse(*args, **kwargs):
        raise AssertionError("descriptors extracted although they are cached")

    monkeypatch.setattr("vprlab.evaluation.protocol.extract_descriptors_timed", refuse)
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv) == 0
    again = [r for r in _read_csv(tmp_path / "again" / "comparison.csv") if r["status"] == "ok"]
    assert [r["R@1"] for r in again] == [r["R@1"] for r in ok]
    assert {r["speed measured"] for r in again} == {"first run (cache)"}


def test_published_numbers_and_differences(models, tiny_synthetic, tmp_path):
    """A published CSV row for the released model on this benchmark: its numbers and measured minus
    published appear in every output, the source of each as [n] listed below, a second source of the
    same cell as 'also [m]'; a cell without a published row says "no published number", a recall its
    source does not give "not given" ('-' stays for "not measured"); CSV: empty numbers and a status."""
    from vprlab.data.benchmarks import load_benchmark

    bench = load_benchmark(format="npy", root=tiny_synthetic.benchmark_root, name="synthetic", image_size=(32, 64))
    published = tmp_path / "published.csv"
    published.write_text("model,benchmark,R@1,R@5,R@10,R@20,source,note\n"
                         "boq_resnet50_16384,synthetic,12.5,40,,90,made-up test row,another split\n"
                         "boq_resnet50_16384,synthetic,11.0,,,,a second made-up source,\n")
    result = compare_models([("boq_resnet50_16384", str(models["released"])), str(models["gem"])], [bench],
                            EvalSettings(device="cpu", batch_size=16, progress=False), published=published)
    boq, gem = result.rows
    assert boq["published R@1"] == 12.5 and boq["diff R@1"] == pytest.approx(boq["R@1"] - 12.5)
    assert boq["published R@10"] is None and boq["diff R@10"] is None  # not published: no difference
    assert boq["published source"] == "made-up test row" and boq["published note"] == "another split"
    assert boq["other published sources"] == "a second made-up source (R@1 11.0)" and boq["published status"] == "published"
    assert gem["published R@1"] is None and gem["published source"] is None and gem["published status"] == "no published number"
    paths = comparison.write_comparison(result, tmp_path / "out")
    back = _read_csv(paths["csv"])
    assert float(back[0]["diff R@1"]) == pytest.approx(boq["R@1"] - 12.5) and back[1]["published R@1"] == ""
    assert [r["published status"] for r in back] == ["published", "no published number"]
    assert back[0]["other published sources"] == "a second made-up source (R@1 11.0)" and back[0]["published note"] == "another split"
    markdown = paths["markdown"].read_text()
    lines = {line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("|").split("|")]
             for line in markdown.splitlines() if line.startswith("| boq_resnet50_16384 |") or line.startswith(f"| {gem['model']} |")}
    header = [c.strip() for c in next(line for line in markdown.splitlines() if line.startswith("| model |")).strip("|").split("|")]
    boq_cells, gem_cells = dict(zip(header, lines["boq_resnet50_16384"])), dict(zip(header, lines[gem["model"]]))
    assert (boq_cells["paper R@1"], boq_cells["paper R@10"], boq_cells["Δ R@10"]) == ("12.5", "not given", "")
    assert boq_cells["Δ R@1"] == f"{boq['R@1'] - 12.5:+.1f}" and boq_cells["published"] == "[1], also [2]"
    assert (gem_cells["paper R@1"], gem_cells["Δ R@1"], gem_cells["published"]) == ("", "", "no published number")
    assert "- [1] made-up test row\n- [2] a second made-up source\n" in markdown
    assert "boq_resnet50_16384 on synthetic: another split" in markdown and "'-': not measured" in markdown
    # LaTeX: one line per cell, measured (published, difference) where published, names escaped.
    latex = paths["latex"].read_text()
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 2 and r"\begin{tabular}" in latex and r"\toprule" in latex
    cells = [c.strip() for c in body[0].rstrip(" \\").split("&")]
    assert cells[0] == r"boq\_resnet50\_16384" and cells[2] == "16384"
    assert cells[4] == f"{boq['R@1']:.1f} (12.5, {boq['R@1'] - 12.5:+.1f})" and cells[6] == f"{boq['R@10']:.1f} (not given)"
    assert cells[-1] == "[1], also [2]"
    gem_cells = [c.strip() for c in body[1].rstrip(" \\").split("&")]
    assert re.fullmatch(r"\d+\.\d", gem_cells[4]) and gem_cells[-1] == "no published number"
    assert "Published: [1] made-up test row; [2] a second made-up source." in latex


def test_shipped_published_numbers_carry_their_source_and_match_the_boq_reference():
    rows = published_results()
    assert all(r["source"] for r in rows)
    row = published_for(rows, "boq_resnet50_16384", "pitts30k_test")  # config name -> paper name
    assert (row["R@1"], row["R@5"], row["R@10"], row["R@20"]) == (92.4, 96.5, 97.4, 98.1) and "BoQ README" in row["source"]
    assert published_for(rows, "boq_dinov2_12288", "nordland_10frames")["R@1"] == 90.6
    assert published_for(rows, "mixvpr_resnet50_4096", "msls_val")["R@1"] == 88.2
    assert published_for(rows, "boq_resnet50_16384", "real_nordland64") is None
    reference = SHARED / "reference" / "boq_paper_results.csv"
    if reference.is_file():
        names = {"boq_resnet50": "boq_resnet50_16384", "boq_dinov2": "boq_dinov2_12288"}
        for ref in _read_csv(reference):
            ours = published_for(rows, names[ref["model"]], ref["benchmark"])
            assert [ours[f"R@{k}"] for k in (1, 5, 10, 20)] == [float(ref[f"R@{k}"]) for k in (1, 5, 10, 20)]


def test_user_mistakes_are_messages(tmp_path, capsys):
    assert main(["--models", "boq_resnet50_16384", "--benchmarks", "no_such_bench", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark ['no_such_bench']" in capsys.readouterr().err
    assert main(["--models", "not_a_model", "--benchmarks", "synthetic", "--out", str(tmp_path),
                 "--override", f"paths.data_dir={tmp_path}"]) == 2
    assert "'not_a_model' is neither a released model" in capsys.readouterr().err
    assert main(["--models", "x.ckpt", "--weights", "x.ckpt", "--benchmarks", "synthetic", "--out", str(tmp_path)]) == 2
    assert "write NAME=PATH" in capsys.readouterr().err


def test_nothing_evaluated_or_strict_is_a_failure_exit(models, tiny_synthetic, tmp_path, capsys):
    data_dir, cache = tiny_synthetic.root.parent, tmp_path / "cache"
    base = ["--benchmarks", "synthetic", "--override", *_overrides(data_dir, cache)]
    assert main(["--models", "/nowhere/a.ckpt", "--out", str(tmp_path / "a"), *base]) == 1
    assert "no cell evaluated" in capsys.readouterr().out
    assert main(["--models", str(models["gem"]), "/nowhere/a.ckpt", "--strict", "--out", str(tmp_path / "b"), *base]) == 1
    assert main(["--models", str(models["gem"]), "/nowhere/a.ckpt", "--out", str(tmp_path / "c"), *base]) == 0


def test_the_vprlab_command_lists_compare():
    from vprlab.commands.cli import SUBCOMMANDS

    assert SUBCOMMANDS["compare"][0] == "vprlab.commands.compare"
    assert (CONF / "benchmark" / "synthetic.yaml").is_file()


@pytest.mark.slow
def test_real_nordland_corridor_and_gardens_point(models, tmp_path):
    """The three real benchmarks in ../shared, three architectures; each cell equals evaluate.py's."""
    if not (SHARED / "data" / "real" / "nordland_64x32_seqslam").is_dir():
        pytest.skip("needs ../shared/data/real")
    benches = ["real_nordland64", "real_corridor", "real_gardenspoint"]
    overrides = ["device=cpu", "num_workers=0", "batch_size=64", f"cache_dir={tmp_path / 'cache'}", "progress=false",
                 *[f"benchmark.{b}.image_size={SIZE}" for b in benches]]
    assert main(["--models", str(models["gem"]), str(models["mixvpr"]), str(models["exported"]),
                 "--benchmarks", *benches, "--out", str(tmp_path / "out"), "--override", *overrides]) == 0
    rows = [r for r in _read_csv(tmp_path / "out" / "comparison.csv") if r["status"] == "ok"]
    assert len(rows) == 9
    cfg = compose_config("evaluate", [f"ckpt_path={models['mixvpr']}", f"benchmark=[{','.join(benches)}]",
                                      f"paths.output_dir={tmp_path / 'eval'}", *overrides])
    metrics = run_evaluation(cfg)
    for bench in benches:
        (row,) = [r for r in rows if r["source"] == str(models["mixvpr"]) and r["benchmark"] == bench]
        assert float(row["R@1"]) == pytest.approx(metrics[bench]["R@1"])


def test_published_models_of_other_methods_with_their_own_preprocessing(tiny_synthetic, tmp_path, monkeypatch):
    """A CosPlace release (random weights in its layout, native-size evaluation) next to a vprlab
    checkpoint: the cell equals evaluate.py pretrained=...; a Drive-only release with no local file is
    skipped with where to get it; the published row is found through the canonical name."""
    import torchvision

    from vprlab.pretrained import published_model

    sequential = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    raw = {f"backbone.{sequential[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    raw.update({"aggregation.1.p": torch.tensor([3.0]), "aggregation.3.weight": torch.randn(32, 512) / 20, "aggregation.3.bias": torch.zeros(32)})
    cosplace = tmp_path / published_model("cosplace_resnet18_32").file_name
    torch.save(raw, cosplace)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no local MixVPR file
    published = tmp_path / "published.csv"
    published.write_text("model,benchmark,R@1,R@5,R@10,R@20,source\ncosplace_resnet18_32,synthetic,50,60,70,80,test row\n")
    data_dir, cache = tiny_synthetic.root.parent, tmp_path / "cache"
    overrides = [f"paths.data_dir={data_dir}", f"cache_dir={cache}", "device=cpu", "num_workers=0", "batch_size=16", "progress=false"]
    assert main(["--models", "cosplace_resnet18_32", "mixvpr_resnet50_4096", "--weights", f"cosplace_resnet18_32={cosplace}",
                 "--benchmarks", "synthetic", "--published", str(published), "--out", str(tmp_path / "out"),
                 "--override", *overrides]) == 0
    rows = _read_csv(tmp_path / "out" / "comparison.csv")
    (ok,) = [r for r in rows if r["status"] == "ok"]
    assert ok["model"] == "cosplace_resnet18_32" and ok["image_size"] == "native" and ok["descriptor_dim"] == "32"
    assert float(ok["diff R@1"]) == pytest.approx(float(ok["R@1"]) - 50) and ok["published source"] == "test row"
    (skip,) = [r for r in rows if r["status"] == "skipped"]
    assert skip["model"] == "mixvpr_resnet50_4096" and "no download URL; get it from" in skip["reason"]
    cfg = compose_config("evaluate", [*overrides, "pretrained=cosplace_resnet18_32", f"pretrained.path={cosplace}",
                                      "benchmark=[synthetic]", f"paths.output_dir={tmp_path / 'eval'}", "cache=false"])
    assert run_evaluation(cfg)["synthetic"]["R@1"] == pytest.approx(float(ok["R@1"]))


def test_labels_and_subset_marks_flow_into_every_output(models, tiny_synthetic, tmp_path, capsys):
    """issue 21 items 1, 3 and 11: LABEL=SOURCE names a model in every output; a published name with
    another weights file than the release's is labelled with that file; a benchmark evaluated on other
    counts than published is marked in the Markdown, CSV, LaTeX and plot legend, and named below."""
    import shutil

    renamed = tmp_path / "boq_finetuned.pth"
    shutil.copy(models["released"], renamed)
    data_dir, cache = tiny_synthetic.root.parent, tmp_path / "cache"
    published_counts = ["benchmark.synthetic._target_=vprlab.data.benchmarks.load_benchmark", "+benchmark.synthetic.format=npy",
                        "+benchmark.synthetic.prefix=synthetic", "+benchmark.synthetic.expected_num_db=1549",
                        "+benchmark.synthetic.expected_num_queries=1464"]
    argv = ["--models", f"mine={models['gem']}", str(models["exported"]), "boq_resnet50_16384",
            "--weights", f"boq_resnet50_16384={renamed}", "--benchmarks", "synthetic", "--out", str(tmp_path / "out"),
            "--override", *_overrides(data_dir, cache), *published_counts]
    with pytest.warns(BenchmarkCountWarning, match=r"benchmark 'synthetic' has \d+ database images") as caught:
        assert main(argv) == 0
    assert {Path(w.filename).name for w in caught if w.category is BenchmarkCountWarning} == {"test_compare.py"}  # the caller
    printed = capsys.readouterr().out
    rows = {r["model"]: r for r in _read_csv(tmp_path / "out" / "comparison.csv") if r["status"] == "ok"}
    assert set(rows) == {"mine", "boq_tiny_release", "boq_resnet50_16384 (boq_finetuned.pth)"}
    assert rows["mine"]["source"] == str(models["gem"])
    num_db, num_queries = rows["mine"]["num_db"], rows["mine"]["num_queries"]
    note = f"synthetic: evaluated on {num_db} database images and {num_queries} queries; published: 1,549 and 1,464"
    assert all(r["subset"] == note and r["expected_num_db"] == "1549" for r in rows.values())
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    mine_line = next(line for line in markdown.splitlines() if line.startswith("| mine | synthetic |"))
    assert f"| {float(rows['mine']['R@1']):.1f}†" in mine_line and note in markdown
    assert "| boq_resnet50_16384 (boq_finetuned.pth) | synthetic |" in markdown
    latex = (tmp_path / "out" / "comparison.tex").read_text()
    assert "mine & synthetic & 256 &" in latex and f"{float(rows['mine']['R@1']):.1f}$^\\dagger$" in latex
    assert "Not the published benchmark" in latex
    assert note in printed
    # A label used twice, and a path with '=' in a folder name (Hydra job folders) that is not a label.
    assert main(["--models", f"a={models['gem']}", f"a={models['mixvpr']}", "--benchmarks", "synthetic",
                 "--out", str(tmp_path / "dup"), "--override", *_overrides(data_dir, cache)]) == 2
    assert "the labels ['a'] are given to more than one model" in capsys.readouterr().err
    assert compare.split_label("multiruns/t/aggregator=gem/checkpoints/best.ckpt") == (None, "multiruns/t/aggregator=gem/checkpoints/best.ckpt")
    assert compare.split_label("mine=runs/x/best.ckpt") == ("mine", "runs/x/best.ckpt")


def _overlap(boxes) -> bool:
    boxes = sorted(boxes, key=lambda b: b.x0)
    return any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:]))


@pytest.mark.parametrize("length", [40, 70])
def test_plot_stays_readable_with_long_names_and_labels_every_size(length):
    """issue 21 item 9: with 40-character (and longer) run names the legend lies inside the figure, no two
    tick labels of an axis overlap, and the size axis labels the 128 and 512 points."""
    names = [f"outputs/train/runs/2026-01-0{i}_10-00-00/{'x' * 40}"[:length] for i in range(1, 6)]
    assert all(len(n) == length for n in names)
    rows = []
    for i, (name, dim, speed) in enumerate(zip(names, (128, 512, 4096, 8448, 16384), (3.1, 7.9, 12.4, 55.0, 140.0))):
        for bench in ("pitts30k_test", "real_nordland64"):
            rows.append({"model": name, "benchmark": bench, "R@1": 40.0 + i, "descriptor_dim": dim, "img_per_s": speed})
    fig = comparison.comparison_figure(comparison.Comparison(rows, [], (1, 5, 10), "cpu", "test"))
    renderer = fig.canvas.get_renderer()
    inside = fig.bbox
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, (box, inside)
    size_axis, speed_axis = fig.axes
    for ax in (size_axis, speed_axis):
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 3 and not _overlap([t.get_window_extent(renderer) for t in labels]), [t.get_text() for t in labels]
        for artist in ax.get_xticklabels():  # inside the figure too
            extent = artist.get_window_extent(renderer)
            assert inside.x0 <= extent.x0 and extent.x1 <= inside.x1
    assert {"128", "512"} <= {t.get_text() for t in size_axis.get_xticklabels()}
    for ax in (size_axis, speed_axis):  # no minor-tick labels (2x10^1 ...) that could overlap the major ones
        assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
