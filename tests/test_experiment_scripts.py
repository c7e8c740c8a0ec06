"""The scripts in experiments/: `--help` prints help and does nothing else (no file rewritten, no run
started), and a folder argument that is not there is a one-line usage error (exit 2) or is created,
never a traceback."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest
from conftest import REPO

EXPERIMENTS = REPO / "experiments"
# Not walked for changed files: git's store, the virtual environment, caches.
_NOT_WALKED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
PYTHON_SCRIPTS = sorted(p.name for p in EXPERIMENTS.glob("*.py"))
SHELL_SCRIPTS = sorted(p.name for p in EXPERIMENTS.glob("*.sh"))


def _tree_state() -> dict[str, int]:
    """Every file of the repository (outside .git) with its modification time in ns."""
    state = {}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_WALKED]  # the virtual environment alone is ~2 s a walk
        for name in files:
            path = os.path.join(folder, name)
            state[path] = os.stat(path).st_mtime_ns
    return state


def _run_script(name: str, argv: list[str], monkeypatch) -> int | str | None:
    """Run experiments/<name> as `python experiments/<name> argv...` in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", [str(EXPERIMENTS / name), *argv])
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # what `python experiments/x.py` puts first on sys.path
    try:
        runpy.run_path(str(EXPERIMENTS / name), run_name="__main__")
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_every_script_is_covered():
    assert "pretrained_configs.py" in PYTHON_SCRIPTS and "measure_search.py" in PYTHON_SCRIPTS
    assert {"gpu_check.sh", "gpu_wheels.sh", "run_examples.sh"} <= set(SHELL_SCRIPTS)


@pytest.mark.parametrize("name", PYTHON_SCRIPTS)
def test_help_only_prints_help(name, monkeypatch, capsys):
    before = _tree_state()
    assert _run_script(name, ["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out, out[:500]
    changed = [path for path, mtime in _tree_state().items() if before.get(path) != mtime]
    assert not changed, f"{name} --help wrote {changed[:5]}"


@pytest.mark.parametrize("name", SHELL_SCRIPTS)
def test_shell_script_help_only_prints_help(name, tmp_path):
    before = _tree_state()
    result = subprocess.run(["bash", str(EXPERIMENTS / name), "--help"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PY": "false"})
    assert result.returncode == 0, result.stderr
    assert f"experiments/{name}" in result.stdout and not result.stdout.lstrip().startswith("#")
    assert not (tmp_path / "out").exists() and _tree_state() == before


@pytest.mark.parametrize("name", ["gpu_check.sh", "run_examples.sh"])
def test_shell_script_refuses_arguments(name, tmp_path):
    result = subprocess.run(["bash", str(EXPERIMENTS / name), "fast"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PY": "false"})
    assert result.returncode == 2 and "takes no arguments (got 'fast')" in result.stderr
    assert not (tmp_path / "out").exists()


def test_measure_search_makes_its_tmp_folder(tmp_path, monkeypatch, capsys):
    scratch = tmp_path / "not" / "yet"
    args = ["--tmp", str(scratch), "--num-db", "64", "--dim", "8", "--num-queries", "4", "--chunk", "32", "--check", "4",
            "--out", str(tmp_path / "results" / "search.json")]
    assert _run_script("measure_search.py", args, monkeypatch) == 0
    assert scratch.is_dir() and not any(scratch.iterdir())  # made, and the database removed after the run
    assert (tmp_path / "results" / "search.json").is_file()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert _run_script("measure_search.py", ["--tmp", str(blocked / "sub")], monkeypatch) == 2
    assert f"--tmp {blocked / 'sub'}: cannot create the folder" in capsys.readouterr().err


@pytest.mark.parametrize("name, argv, message", [
    ("measure_train_step.py", ["--boq-repo", "{missing}", "--boq-python", sys.executable], "--boq-repo {missing}: no such folder"),
    ("boq_original_train_steps.py", ["--boq-repo", "{missing}", "--data", "{missing}", "--steps", "1"],
     "--boq-repo {missing}: no such folder"),
    ("nordland_real_split.py", ["--src", "{missing}", "--out", "{tmp}/out"], "--src {missing}: no gt.csv there"),
    ("profile_train_step.py", ["--data", "{missing}"], "--data {missing}: no such folder"),
])
def test_a_missing_folder_is_a_usage_error(name, argv, message, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "missing"
    fill = {"missing": missing, "tmp": tmp_path}
    assert _run_script(name, [a.format(**fill) for a in argv], monkeypatch) == 2
    err = capsys.readouterr().err
    assert f"{name}: error: {message.format(**fill)}" in err, err
    assert not missing.exists() and not (tmp_path / "out").exists()
