"""One evaluation settings value (issue 22 item 1): built once from evaluate.yaml or train.yaml, and
no function on the evaluation path takes more than six arguments besides ``self``."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config

import vprlab.evaluation
from vprlab.evaluation.settings import EvalSettings
from vprlab.evaluation.visualize import PictureSettings

MAX_ARGUMENTS = 6
# The callers of the evaluation path outside evaluation/ (evaluate.py, compare, the trainer's validation).
CALLERS = {
    "vprlab.commands.evaluate": ("run_evaluation", "load_model_for_eval", "_draw", "_write_submission", "check_inputs"),
    "vprlab.commands.compare": ("compare_models", "load_compare_model", "missing_weights"),
    "vprlab.commands.models": ("load_model", "_load_checkpoint", "_load_configured"),
    "vprlab.engine.trainer": ("train", "_train"),
}


def _arguments(function) -> int:
    return len([name for name in inspect.signature(function).parameters if name not in ("self", "cls")])


def _functions(module):
    """Every function and method defined in ``module``, without the ``__init__`` a dataclass generates
    (a value's fields are not arguments passed down)."""
    for name, obj in vars(module).items():
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            yield name, obj
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            for attr, member in vars(obj).items():
                member = getattr(member, "__func__", member)
                generated = attr == "__init__" and dataclasses.is_dataclass(obj)
                if inspect.isfunction(member) and not generated:
                    yield f"{name}.{attr}", member


def test_no_function_on_the_evaluation_path_takes_more_than_six_arguments() -> None:
    modules = [importlib.import_module(f"vprlab.evaluation.{m.name}") for m in pkgutil.iter_modules(vprlab.evaluation.__path__)]
    assert {"protocol", "descriptors", "retrieval", "settings", "visualize"} <= {m.__name__.rsplit(".", 1)[1] for m in modules}
    counts = {f"{m.__name__}.{name}": _arguments(f) for m in modules for name, f in _functions(m)}
    for module_name, names in CALLERS.items():
        module = importlib.import_module(module_name)
        counts.update({f"{module_name}.{name}": _arguments(getattr(module, name)) for name in names})
    too_many = {name: n for name, n in counts.items() if n > MAX_ARGUMENTS}
    assert not too_many, f"pass an EvalSettings (or PictureSettings) instead of loose arguments: {too_many}"
    assert counts["vprlab.evaluation.protocol.run_benchmark"] <= 5  # the model, the benchmark, the settings, ...


def test_the_check_counts_what_it_should() -> None:
    """The counter sees a long signature (so the test above can fail) and skips only generated dataclass inits."""
    def long(a, b, c, d, e, f, g):  # noqa: ARG001
        return None

    assert _arguments(long) == 7
    names = dict(_functions(importlib.import_module("vprlab.evaluation.settings")))
    assert "EvalSettings.__init__" not in names and "EvalSettings.from_eval_config" in names


def test_from_eval_config_reads_every_key_of_evaluate_yaml(tmp_path) -> None:
    cfg = compose_config("evaluate", [
        f"paths.output_dir={tmp_path}", "device=cpu", "precision=bf16", "batch_size=7", "num_workers=3",
        "recall_ks=[1,3]", "progress=false", "db_chunk_size=100", "faiss_gpu=false", "search_float16=true",
        "submission_top_k=30", f"cache_dir={tmp_path / 'cache'}", "cache_dtype=float16", "channels_last=false",
        "fold_batchnorm=true", "visualize.num_queries=2", "visualize.top_k=40", "visualize.out_dir=null",
    ])
    s = EvalSettings.from_eval_config(cfg)
    assert (s.batch_size, s.num_workers, s.device, s.ks, s.progress) == (7, 3, torch.device("cpu"), (1, 3), False)
    assert (s.amp_dtype, s.precision) == (torch.bfloat16, "bf16")
    assert (s.db_chunk_size, s.use_gpu, s.search_float16) == (100, False, True)
    assert (s.cache_dir, s.cache_dtype) == (str(tmp_path / "cache"), "float16")
    assert s.descriptor_cache().root == tmp_path / "cache" and s.descriptor_cache().dtype == "float16"
    assert (s.channels_last, s.fold_batchnorm) == (False, True)
    assert s.pictures == PictureSettings(num_queries=2, top_k=40, queries=[], attention_queries=None,
                                         out_dir=str(Path(cfg.results_dir) / "visuals"))

    class Msls:
        submission_format = "msls"

    assert s.search_k(object()) == 40 and s.search_k(Msls()) == 40  # the pictures' top_k is the largest
    assert s.replace(pictures=None).search_k(object()) == 3 and s.replace(pictures=None).search_k(Msls()) == 30
    off = EvalSettings.from_eval_config(compose_config("evaluate", [f"paths.output_dir={tmp_path}", "cache=false", "device=cpu"]))
    assert off.cache_dir is None and off.descriptor_cache() is None and off.pictures is None


def test_from_train_config_reads_the_trainer_keys(tmp_path) -> None:
    from vprlab.models.backbones.resnet import ResNetBackbone

    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", "trainer.eval_batch_size=9", "trainer.recall_ks=[1,5]",
                                   "trainer.precision=32", "trainer.val_preprocessing={size:[30,40],interpolation:bilinear}"])
    backbone = ResNetBackbone("resnet18", pretrained=False)
    s = EvalSettings.from_train_config(cfg, torch.device("cpu"), 2, backbone)
    assert (s.batch_size, s.num_workers, s.ks, s.amp_dtype, s.cache_dir) == (9, 2, (1, 5), None, None)
    assert s.preprocessing.size == (30, 40) and s.preprocessing.mean == tuple(backbone.mean)


def test_settings_refuse_a_batch_size_below_one() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        EvalSettings(batch_size=0)
