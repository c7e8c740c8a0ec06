"""`vprlab leaderboard`: every published model whose file is here on every benchmark that is here, one
ranked table. Models are CosPlace ResNet18 releases (random weights in the release layout, written by
the stand-in writer) evaluated at 32x64 on the tiny synthetic benchmark, so every test runs in seconds;
the torch hub dir is a temporary folder, so only the files a test places there are found."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import SHARED, compose_config

from vprlab.commands.cli import main as vprlab
from vprlab.commands.evaluate import run_evaluation
from vprlab.commands.leaderboard import find_benchmarks, find_models, main, rank_models
from vprlab.evaluation.settings import EvalSettings
from vprlab.pretrained.catalog import PUBLISHED_MODELS, published_model
from vprlab.pretrained.standins import write_random_release
from vprlab.reports.comparison import Skipped, skipped_lines
from vprlab.reports.leaderboard import NO_PUBLISHED, STAND_IN, STAND_IN_DIFF, leaderboard_table

A, B = "cosplace_resnet18_32", "cosplace_resnet18_64"
GARDENS = SHARED / "data" / "real" / "gardenspoint_sample10"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub dir (TORCH_HOME/hub): a model is 'on disk' only when a test puts it there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return Path(torch.hub.get_dir())


def _overrides(data_dir: Path, pitts: bool = False) -> list[str]:
    """evaluate.yaml overrides: CPU, tiny batches, the synthetic benchmark at 32x64 (and, with ``pitts``,
    Pitts30k pointed at a folder that is not there, for runs that name it)."""
    return [f"paths.data_dir={data_dir}", "device=cpu", "num_workers=0", "batch_size=16", "progress=false",
            "benchmark.synthetic.image_size=[32,64]", *(["benchmark.pitts30k_test.root=/nonexistent/Pittsburgh"] if pitts else [])]


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _evaluate_py(name: str, path: Path, data_dir: Path, out: Path) -> dict:
    """What `python evaluate.py pretrained=NAME pretrained.path=PATH benchmark=[synthetic]` prints (no cache)."""
    cfg = compose_config("evaluate", [*_overrides(data_dir), f"pretrained={name}", f"pretrained.path={path}",
                                      "benchmark=[synthetic]", f"paths.output_dir={out}", "cache=false"])
    return run_evaluation(cfg)["synthetic"]


def test_models_are_found_in_the_hub_a_weights_dir_or_by_name_and_the_rest_is_skipped_with_why(hub, tmp_path):
    in_hub = write_random_release(A, hub, hub_layout=True)
    folder = tmp_path / "releases"
    in_dir = write_random_release(B, folder)
    given = write_random_release("eigenplaces_resnet18_256", tmp_path / "given")
    names = [A, B, "eigenplaces_resnet18_256", "mixvpr_resnet50_4096", "netvlad_vgg16_pitts30k", "boq_resnet50_16384"]
    found, skipped = find_models(names, {"eigenplaces_resnet18_256": str(given)}, [folder])
    assert {m.name: m.path for m in found} == {A: in_hub, B: in_dir, "eigenplaces_resnet18_256": given}
    assert not any(m.stand_in for m in found)
    reasons = {s.model: s.reason for s in skipped}
    assert set(reasons) == {"mixvpr_resnet50_4096", "netvlad_vgg16_pitts30k", "boq_resnet50_16384"}
    assert {s.benchmark for s in skipped} == {"*"}
    assert reasons["boq_resnet50_16384"].startswith("no weights on disk: no resnet50_16384.pth at " + str(hub))
    assert "vprlab models download boq_resnet50_16384" in reasons["boq_resnet50_16384"]
    assert "Google Drive" in reasons["mixvpr_resnet50_4096"]  # no URL: where to get it
    # Without --models: every registered name is either found or skipped, none twice.
    found, skipped = find_models(None, {}, [folder])
    assert sorted([m.name for m in found] + [s.model for s in skipped]) == sorted(PUBLISHED_MODELS)
    assert {m.name for m in found} == {A, B}
    # A protocol some families lack: those are skipped, saying which protocols they have.
    found, skipped = find_models([A, "boq_resnet50_16384"], protocol="vpr-methods-evaluation")
    assert [m.name for m in found] == [A]
    assert skipped[0].reason == "no 'vpr-methods-evaluation' protocol (has: original)"
    # Stand-ins: every named model that can be written; NetVLAD's MATLAB file cannot.
    found, skipped = find_models([A, "netvlad_vgg16_pitts30k"], stand_ins=True)
    assert [(m.name, m.stand_in) for m in found] == [(A, True)]
    assert "no stand-in" in skipped[0].reason and "matlab" in skipped[0].reason


def test_benchmarks_are_found_when_present_and_complete(tiny_synthetic, tmp_path):
    data_dir = tiny_synthetic.root.parent
    # A root without the lists is missing data; lists that do not read are unreadable: both skipped, with the reader's words.
    (tmp_path / "empty").mkdir()
    _, skipped, _ = find_benchmarks(["synthetic"], data_dir, [f"benchmark.synthetic.root={tmp_path / 'empty'}"])
    assert skipped[0].reason.startswith("missing: MissingFileError: database list ")
    (tmp_path / "broken").mkdir()
    for suffix in ("dbImages", "qImages", "gt"):
        (tmp_path / "broken" / f"synthetic_{suffix}.npy").write_text("not an npy file")
    _, skipped, _ = find_benchmarks(["synthetic"], data_dir, [f"benchmark.synthetic.root={tmp_path / 'broken'}"])
    assert skipped[0].reason.startswith("unreadable: ") and skipped[0].benchmark == "synthetic"
    names = ["synthetic", "pitts30k_test"] + (["real_gardenspoint"] if GARDENS.is_dir() else [])
    overrides = ["benchmark.pitts30k_test.root=/nonexistent/Pittsburgh", "benchmark.real_gardenspoint.expected_num_db=11"]
    present, skipped, cfg = find_benchmarks(names, data_dir, overrides)
    assert [b.name for b in present] == ["synthetic"]
    assert (present[0].num_db, present[0].num_queries) == (12, 12)  # TINY_SYNTHETIC: 12 places, one image each
    reasons = {s.benchmark: s.reason for s in skipped}
    assert reasons["pitts30k_test"].startswith("missing: no data at /nonexistent/Pittsburgh")
    if GARDENS.is_dir():  # 10 database images, 11 published here: incomplete, unless allowed
        assert reasons["real_gardenspoint"].startswith("incomplete: 10 db / 10 queries, published 11 / 10")
        present, _, _ = find_benchmarks(names, data_dir, overrides, allow_incomplete=True)
        assert [b.name for b in present] == ["synthetic", "real_gardenspoint"]
    assert str(cfg.paths.data_dir) == str(data_dir)
    # Without --benchmarks every config is looked at; only the synthetic data is under this data dir.
    present, skipped, _ = find_benchmarks(None, data_dir, ["benchmark.real_gardenspoint.root=/nonexistent",
                                                           "benchmark.real_corridor.root=/nonexistent",
                                                           "benchmark.real_nordland64.root=/nonexistent"])
    assert "synthetic" in [b.name for b in present] and "pitts30k_test" in {s.benchmark for s in skipped}
    assert all(s.reason for s in skipped)


def test_table_equals_evaluate_py_reuses_one_cache_and_shows_published_numbers(hub, tiny_synthetic, tmp_path, monkeypatch, capsys):
    data_dir = tiny_synthetic.root.parent
    folder = tmp_path / "releases"
    paths = {name: write_random_release(name, folder, seed=i) for i, name in enumerate((A, B))}
    published = tmp_path / "published.csv"
    published.write_text("model,benchmark,R@1,R@5,R@10,R@20,source\n"
                         f"{A},synthetic,12.5,40,,90,made-up test row\n")
    cache = tmp_path / "cache"
    argv = ["--models", A, B, "boq_resnet50_16384", "--weights-dir", str(folder), "--benchmarks", "synthetic", "pitts30k_test",
            "--published", str(published), "--cache", str(cache), "--out", str(tmp_path / "out"), "--override", *_overrides(data_dir, pitts=True)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = _read_csv(tmp_path / "out" / "leaderboard.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["model"] for r in ok) == [A, B] and {r["weights"] for r in ok} == {"released file"}
    for row in ok:  # the numbers are evaluate.py's for that release file
        expected = _evaluate_py(row["model"], paths[row["model"]], data_dir, tmp_path / "eval" / row["model"])
        for k in (1, 5, 10, 20):
            assert float(row[f"R@{k}"]) == pytest.approx(expected[f"R@{k}"])
        assert int(row["descriptor_dim"]) == expected["descriptor_dim"] == int(row["model"].rsplit("_", 1)[1])
    # Ranked by R@1 (ties by R@5), rank 1 first.
    assert [r["rank"] for r in ok] == ["1", "2"]
    assert (float(ok[0]["R@1"]), float(ok[0]["R@5"])) >= (float(ok[1]["R@1"]), float(ok[1]["R@5"]))
    by = {r["model"]: r for r in ok}
    assert float(by[A]["published R@1"]) == 12.5 and float(by[A]["diff R@1"]) == pytest.approx(float(by[A]["R@1"]) - 12.5)
    assert by[A]["published R@10"] == "" and by[A]["diff R@10"] == ""  # the source gives none
    assert by[B]["published R@1"] == "" and by[B]["published source"] == ""
    skipped = {(r["model"], r["benchmark"]): r["reason"] for r in rows if r["status"] == "skipped"}
    assert set(skipped) == {("*", "pitts30k_test"), ("boq_resnet50_16384", "*")}
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {by[A]['rank']} | {A} |"))
    assert f"| 12.5 | 40.0 | {float(by[A]['R@1']) - 12.5:+.1f} | {float(by[A]['R@5']) - 40:+.1f} |" in line
    assert f"| {B} | synthetic | 64 | 32x64 |" in markdown and f"| {NO_PUBLISHED} |" in markdown
    assert "made-up test row" in markdown and "model boq_resnet50_16384: skipped on every benchmark (no weights on disk" in markdown
    assert STAND_IN not in markdown
    latex = (tmp_path / "out" / "leaderboard.tex").read_text()
    assert r"\begin{tabular}" in latex and "cosplace\\_resnet18\\_32 & synthetic & 32 & 32x64" in latex
    assert "Skipped: benchmark pitts30k\\_test" in latex
    for plot in ("leaderboard_r1_vs_dim.png", "leaderboard_r1_vs_speed.png"):
        assert (tmp_path / "out" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipped: benchmark pitts30k_test: skipped for every model" in printed
    entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert entries  # one cache for every cell

    # A rerun extracts nothing: every descriptor comes from the same cache, with the same numbers.
    def refuse(*args, **kwargs):
        raise AssertionError("descriptors extracted although they are cached")

    monkeypatch.setattr("vprlab.evaluation.protocol.extract_descriptors_timed", refuse)
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv) == 0
    again = [r for r in _read_csv(tmp_path / "again" / "leaderboard.csv") if r["status"] == "ok"]
    assert [(r["model"], r["R@1"], r["R@5"]) for r in again] == [(r["model"], r["R@1"], r["R@5"]) for r in ok]
    assert {r["speed measured"] for r in again} == {"first run (cache)"}
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == entries


def test_stand_ins_are_labelled_and_never_compared_with_published_numbers(hub, tiny_synthetic, tmp_path, capsys):
    data_dir = tiny_synthetic.root.parent
    published = tmp_path / "published.csv"
    published.write_text(f"model,benchmark,R@1,R@5,R@10,R@20,source\n{A},synthetic,80,90,95,97,made-up test row\n")
    out = tmp_path / "out"
    assert main(["--stand-ins", "--models", A, "netvlad_vgg16_pitts30k", "--benchmarks", "synthetic", "--published", str(published),
                 "--cache", str(tmp_path / "cache"), "--out", str(out), "--override", *_overrides(data_dir)]) == 0
    assert not list(hub.rglob("*.pth"))  # stand-ins live in a temporary folder, never in the user's hub
    (row,) = [r for r in _read_csv(out / "leaderboard.csv") if r["status"] == "ok"]
    assert row["model"] == f"{A} ({STAND_IN})" and row["weights"] == STAND_IN
    assert row["published R@1"] == "80.0" and row["diff R@1"] == "" and row["diff R@5"] == ""
    # The stand-in is the file write_random_release writes (same bytes: same hash), evaluated as evaluate.py does.
    again = write_random_release(A, tmp_path / "standin")
    from vprlab.utils.weights import file_hash

    assert row["checkpoint_hash"] == file_hash(again)
    # Seeded by name too: two families with one architecture never share a stand-in (nor its cache entries).
    twins = [write_random_release(n, tmp_path / "twins") for n in ("cosplace_resnet18_512", "eigenplaces_resnet18_512")]
    assert file_hash(twins[0]) != file_hash(twins[1])
    assert float(row["R@1"]) == pytest.approx(_evaluate_py(A, again, data_dir, tmp_path / "eval")["R@1"])
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.splitlines()[2] == "**Random stand-in weights, not the published models: the recalls below mean nothing.**"
    assert f"| {A} ({STAND_IN}) | synthetic | 32 | 32x64 |" in markdown and f"| 80.0 | 90.0 | {STAND_IN_DIFF} | {STAND_IN_DIFF} |" in markdown
    assert "no stand-in: the NetVLAD family has no export mapping" in markdown
    latex = (out / "leaderboard.tex").read_text()
    assert "random stand-in weights, not the published models" in latex and "n/a (stand-in)" in latex


def test_a_benchmark_that_refuses_a_model_skips_that_cell_only(hub, tiny_synthetic, tmp_path, monkeypatch):
    """A model that cannot run at a benchmark's size (DINOv2 at 32x64) loses that cell, not the leaderboard."""
    from vprlab.commands import leaderboard
    from vprlab.data.benchmarks import load_benchmark
    from vprlab.utils.errors import ConfigError

    real = leaderboard.compare_models

    def refuse_second(items, benchmarks, *args, **kwargs):
        if any(b.name == "second" for b in benchmarks):
            raise ConfigError("image size 32 is not a multiple of the DINOv2 patch size 14; use 42 or 28")
        return real(items, benchmarks, *args, **kwargs)

    monkeypatch.setattr(leaderboard, "compare_models", refuse_second)
    first = load_benchmark(format="npy", root=tiny_synthetic.benchmark_root, name="synthetic", image_size=(32, 64))
    second = dataclasses.replace(first, name="second")
    found, _ = find_models([A], stand_ins=True)
    result = rank_models(found, [first, second], EvalSettings(device="cpu", batch_size=16, progress=False),
                         [Skipped("x", "*", "no weights on disk")])
    assert [(r["model"], r["benchmark"]) for r in result.rows] == [(f"{A} ({STAND_IN})", "synthetic")]
    assert skipped_lines(result) == [
        "model x: skipped on every benchmark (no weights on disk)",
        f"model {A} ({STAND_IN}) on benchmark second: skipped (refused: image size 32 is not a multiple of the DINOv2 patch size 14; use 42 or 28)",
    ]
    assert leaderboard_table(result)[0]["#"] == "1"


def test_mistakes_exit_2_with_a_message_and_nothing_found_exits_1(hub, tiny_synthetic, tmp_path, capsys):
    data_dir = tiny_synthetic.root.parent
    base = ["--out", str(tmp_path / "out"), "--override", *_overrides(data_dir)]
    cases = [
        (["--models", "not_a_model"], "--models not_a_model: not a published model name"),
        (["--benchmarks", "no_such_bench"], "--benchmarks no_such_bench: no conf/benchmark/<name>.yaml"),
        (["--stand-ins"], "--stand-ins writes random weights for the models you name: add --models"),
        (["--models", A, "--weights", f"{B}=/x.pth"], f"--weights given for {B}, which is not among the models to rank"),
        (["--weights-dir", str(tmp_path / "nowhere")], "no such folder"),
        (["--weights", "no_equals_sign"], "write NAME=PATH"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_:
            vprlab(["leaderboard", *args, *base])
        assert exit_.value.code == 2, args
        assert message in capsys.readouterr().err, args
    # Nothing on disk: nothing evaluated, exit 1, the reason printed.
    assert vprlab(["leaderboard", "--models", A, "--benchmarks", "synthetic", *base]) == 1
    assert "no cell evaluated: no model has weights on disk" in capsys.readouterr().out
    # --dry-run lists what would run and evaluates nothing.
    write_random_release(A, hub, hub_layout=True)
    assert vprlab(["leaderboard", "--models", A, B, "--benchmarks", "synthetic", "--dry-run", *base]) == 0
    printed = capsys.readouterr().out
    assert f"model {A}: {published_model(A).local_path()}" in printed and f"skipped: model {B}: skipped on every benchmark" in printed
