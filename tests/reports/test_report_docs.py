"""Every `vprlab report` command of README.md and docs/reports.md runs as written, on tiny run folders
(a BoQ grid with two seeds under outputs/train/multiruns/<time>, evaluate.py runs under outputs/evaluate)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO
from test_report_grouping import _config, _eval_row, _evaluate_folder, write_train_run

from vprlab.commands.cli import main as vprlab

TIME = "2026-01-01_00-00-00"


def _documented_commands() -> list[str]:
    commands = []
    for page in (REPO / "README.md", REPO / "docs" / "reports.md"):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("vprlab report"):
                    commands.append(line)
    return commands


def test_the_documentation_has_report_commands():
    kinds = {shlex.split(c)[2] for c in _documented_commands()}
    assert kinds == {"collect", "sweep", "methods", "paper", "seeds"}


@pytest.fixture()
def outputs(tmp_path, monkeypatch):
    grid = tmp_path / "outputs" / "train" / "multiruns" / TIME
    for layers in (1, 2):
        for queries in (8, 16):
            for seed in (1, 2):
                job = f"aggregator.num_layers={layers},aggregator.num_queries={queries},seed={seed}"
                write_train_run(grid / job, _config(seed=seed, out=str(grid / job), num_layers=layers, num_queries=queries),
                                [20.0 + layers * 10 + queries / 8 + seed, 25.0 + layers * 10 + queries / 8 + seed], dim=64 * queries)
    real = tmp_path / "outputs" / "nordland_real" / "runs"  # the Nordland experiment's run folders
    for seed in (1, 2):
        write_train_run(real / f"boq_seed{seed}", _config(seed=seed, out=str(real / f"boq_seed{seed}"), num_layers=2, num_queries=16),
                        [10.0 + seed, 12.0 + seed], dim=1024)
    _evaluate_folder(tmp_path / "outputs" / "evaluate" / "runs" / TIME, [_eval_row("boq_resnet50_16384", "pitts30k_test", 90.0),
                                                                        _eval_row("convap_resnet50_2048", "nordland", 41.0, h="def456")])
    for backbone, model in (("resnet50", "boq_resnet50_16384"), ("dinov2", "boq_dinov2_12288")):  # the recipes' folders
        _evaluate_folder(tmp_path / "outputs" / f"reproduce_boq_{backbone}" / "runs" / TIME, [_eval_row(model, "pitts30k_test", 90.0)])
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", _documented_commands())
def test_documented_report_command_runs_as_written(outputs, command, capsys):
    args = shlex.split(command.replace("<time>", TIME))
    assert vprlab(args[1:]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    written = [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith(("markdown: ", "png: "))]
    assert written and all(Path(path).is_file() for path in written)  # relative to the working folder, as printed
