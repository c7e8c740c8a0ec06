"""Defaults are written once, in conf/: the code reads the YAML's values and has no default of its own
that could disagree (evaluate.py once cached nothing when `cache` was missing while evaluate.yaml says
true). Where the code must accept a config without a key (hand-made dataset configs), its fallback is
the YAML's value."""

from __future__ import annotations

import ast

import pytest
from conftest import CONF, REPO, compose_config
from omegaconf import OmegaConf

from vprlab.data.loaders import LOADER_DEFAULTS, LOADER_KEYS, loader_setting

# The modules that turn a composed config into a run.
MODULES = ["src/vprlab/commands/evaluate.py", "src/vprlab/engine/trainer.py", "src/vprlab/data/loaders.py"]
# `.get(key, default)` calls that stay, each for a reason: a display name and an error message.
ALLOWED = {("evaluate.py", "model_name"), ("loaders.py", "min_img_per_place")}


def _config_gets_with_defaults(path):
    """(file, key, default) of each `<something cfg-like>.get("key", <not None>)` in ``path``."""
    found = []
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"):
            continue
        if len(node.args) < 2 or not isinstance(node.args[0], ast.Constant):
            continue
        receiver = ast.unparse(node.func.value)
        if "cfg" not in receiver and "vis" not in receiver:  # rows, checkpoint states: not configs
            continue
        default = node.args[1]
        if isinstance(default, ast.Constant) and default.value is None:
            continue
        found.append((path.rsplit("/", 1)[-1], node.args[0].value, ast.unparse(default)))
    return found


@pytest.mark.parametrize("path", MODULES)
def test_code_supplies_no_default_of_its_own(path) -> None:
    extra = [f for f in _config_gets_with_defaults(path) if f[:2] not in ALLOWED]
    assert not extra, f"defaults written in code instead of conf/ (read the YAML value instead): {extra}"


def test_the_loader_fallbacks_are_the_dataset_yaml() -> None:
    yaml = OmegaConf.load(CONF / "dataset" / "gsv_cities.yaml")
    for key, value in LOADER_DEFAULTS.items():
        assert key in yaml, key
        assert yaml[key] == value, f"dataset.{key}: code falls back to {value!r}, conf/dataset/gsv_cities.yaml says {yaml[key]!r}"
    # Every loader key but image_size (the backbone's size, an interpolation) has its fallback.
    assert set(LOADER_KEYS) - set(LOADER_DEFAULTS) == {"image_size"}


def test_a_missing_loader_key_means_what_the_yaml_says(tmp_path) -> None:
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}"]).dataset
    for key in LOADER_DEFAULTS:
        assert loader_setting({}, key) == loader_setting(cfg, key) == cfg[key]
    # A dataset preset's own value wins (synthetic: no workers).
    synthetic = compose_config("train", ["dataset=synthetic", f"paths.output_dir={tmp_path}"]).dataset
    assert loader_setting(synthetic, "num_workers") == 0 and loader_setting(synthetic, "persistent_workers") is False


def test_evaluate_and_trainer_read_every_setting_from_the_yaml(tmp_path) -> None:
    """The keys the code reads without a default exist in the YAML (so no run meets a missing key)."""
    evaluate = compose_config("evaluate", [f"paths.output_dir={tmp_path}"])
    for key in ("cache", "cache_dtype", "progress", "search_float16", "channels_last", "fold_batchnorm", "faiss_gpu",
                "submission_top_k", "db_chunk_size"):
        assert key in evaluate, key
    assert evaluate.cache is True  # the value the old code-side default (False) contradicted
    for key in ("num_queries", "top_k", "select", "queries", "seed", "attention", "attention_queries",
                "num_attention_queries", "out_dir"):
        assert key in evaluate.visualize, key
    trainer = compose_config("train", [f"paths.output_dir={tmp_path}"]).trainer
    for key in ("deterministic", "channels_last", "compile", "aggregator_init_images", "max_nonfinite_steps",
                "eval_before_training", "checkpoint_every_n_steps", "monitor"):
        assert key in trainer, key
