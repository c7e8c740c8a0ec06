"""The `vprlab` command: one entry point for the tools that are not runs."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from conftest import TINY_SYNTHETIC

from vprlab.commands.benchmarks import benchmark_table
from vprlab.commands.cli import SUBCOMMANDS, main
from vprlab.pretrained import RELEASED_MODELS


def _vprlab(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vprlab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_the_console_script_is_declared_and_points_at_the_dispatcher():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "vprlab"]
    assert script.value == "vprlab.commands.cli:main"
    assert script.load() is main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("report", "models", "compare", "leaderboard", "benchmarks", "data", "synth", "resize-cache"):
        assert name in out
    assert set(SUBCOMMANDS) == {"report", "models", "compare", "leaderboard", "benchmarks", "data", "synth", "resize-cache"}


def test_unknown_subcommand_is_a_message_not_a_traceback():
    result = _vprlab("reprot")
    assert result.returncode == 2
    assert "vprlab: unknown command 'reprot'" in result.stderr and "Traceback" not in result.stderr


def test_models_list_names_every_release_and_whether_its_file_is_here(tmp_path):
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / RELEASED_MODELS["boq_resnet50_16384"].file_name).write_bytes(b"x")
    result = _vprlab("models", "list", TORCH_HOME=str(tmp_path), TORCH_HUB=str(hub))
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("boq_")}
    assert set(lines) == set(RELEASED_MODELS)
    for name, spec in RELEASED_MODELS.items():
        assert spec.url in lines[name] and str(spec.descriptor_dim) in lines[name]
    assert lines["boq_resnet50_16384"].split()[5] == "yes" and lines["boq_dinov2_12288"].split()[5] == "no"


def test_synth_then_benchmarks_sees_the_data(tmp_path):
    root = tmp_path / "synthetic"
    synth = _vprlab("synth", "--root", str(root), "--num-train-places", str(TINY_SYNTHETIC["num_train_places"]),
                    "--num-bench-places", str(TINY_SYNTHETIC["num_bench_places"]), "--image-size", "48", "64")
    assert synth.returncode == 0, synth.stderr
    rows = {row["name"]: row for row in benchmark_table(tmp_path)}
    assert rows["synthetic"]["present"] == "yes" and rows["synthetic"]["format"] == "npy" and rows["synthetic"]["status"] == "complete"
    assert rows["pitts30k_test"] == {**rows["pitts30k_test"], "present": "no", "db": "10000", "queries": "6816",
                                      "env": "PITTS30K_ROOT"}
    listing = _vprlab("benchmarks", "--data-dir", str(tmp_path))
    assert listing.returncode == 0 and any(
        line.split()[:2] == ["synthetic", "npy"] and "complete" in line.split() for line in listing.stdout.splitlines())


@pytest.mark.parametrize("name", ["report", "models", "synth", "resize-cache", "benchmarks"])
def test_each_subcommand_has_its_own_help(name):
    result = _vprlab(name, "--help")
    assert result.returncode == 0 and f"vprlab {name}" in result.stdout
