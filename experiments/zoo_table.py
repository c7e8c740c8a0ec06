"""Descriptor sizes and parameter counts of every aggregator on ResNet50 and DINOv2-B, and of every
backbone config: the numbers of the zoo tables in docs/models.md.

    python experiments/zoo_table.py            # prints the markdown tables (aggregators, backbones, experiments)
    python experiments/zoo_table.py --out zoo.json
    python experiments/zoo_table.py --write-docs   # rewrites the aggregator table in docs/models.md

The aggregator rows come from the registry (``vprlab.models.aggregators.registry()``) and what each class
declares (``spec``: paper, descriptor formula, needs), with the settings of its ``conf/aggregator/<name>.yaml``;
adding an aggregator adds its row, and tests/models/test_aggregator_specs.py checks that docs/models.md
holds the rendered table. Everything is built with ``backbone.pretrained=false`` (no download; counts do
not depend on the weights), the table's backbones on the meta device (only their width and stride are
read). An aggregator with a fixed map size is sized for the backbone's training size (ResNet50 320 / 16 =
20, DINOv2-B 280 / 14 = 20); one that needs the class token has no entry for a backbone that cannot
return it. Parameters are all of the aggregator's (they all train); for backbones, all and trainable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vprlab.utils.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DOCS = REPO / "docs" / "models.md"
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"

TABLE_BACKBONES = {"ResNet50": "resnet50", "DINOv2-B": "dinov2"}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def aggregator_config(name: str, conf_dirs: Sequence[Path] = (CONF,)):
    """``aggregator/<name>.yaml`` from the first of ``conf_dirs`` that has it."""
    for conf in conf_dirs:
        path = Path(conf) / "aggregator" / f"{name}.yaml"
        if path.exists():
            return OmegaConf.load(path)
    raise FileNotFoundError(
        f"aggregator '{name}' is registered but has no aggregator/{name}.yaml in {[str(c) for c in conf_dirs]}; "
        "add its config (docs/extending.md)"
    )


def table_backbones() -> dict[str, tuple[type, int, int, tuple[int, int]]]:
    """label -> (class, out_channels, stride, training size) of the table's backbones (built on the meta device)."""
    from vprlab.utils.instantiate import build

    found = {}
    for label, name in TABLE_BACKBONES.items():
        cfg = _compose([f"backbone={name}", "backbone.pretrained=false"])
        with torch.device("meta"):
            backbone = build(cfg.backbone)
        found[label] = (type(backbone), backbone.out_channels, backbone.stride, tuple(cfg.backbone.train_image_size))
    return found


def needs(spec) -> str:
    """What an aggregator needs from the backbone, in words (from its declarations)."""
    words = []
    if spec.needs_cls_token:
        words.append("class token (`backbone.return_cls_token=true`)")
    if spec.fixed_map_size:
        words.append("map of exactly `{}` x `{}`".format(*spec.fixed_map_size))
    if spec.min_map_size:
        words.append("map of at least `{}` x `{}`".format(*spec.min_map_size))
    if spec.more_positions_than:
        words.append(f"more positions than `{spec.more_positions_than}`")
    return "; ".join(words) or "any map"


def aggregator_rows(conf_dirs: Sequence[Path] = (CONF,), backbones: dict | None = None) -> list[dict]:
    from vprlab.models.aggregators import registry
    from vprlab.utils.instantiate import build

    backbones = table_backbones() if backbones is None else backbones
    rows = []
    for name, cls in registry().items():
        spec = cls.spec
        row = {"aggregator": name, "paper": spec.paper, "descriptor": spec.descriptor, "needs": needs(spec)}
        for label, (backbone_cls, channels, stride, train_size) in backbones.items():
            if spec.needs_cls_token and not getattr(backbone_cls, "can_return_cls_token", False):
                row[label] = None
                continue
            cfg = aggregator_config(name, conf_dirs)
            if spec.fixed_map_size:  # sized for the map of the backbone's training size
                for arg, size in zip(spec.fixed_map_size, train_size):
                    cfg[arg] = size // stride
            torch.manual_seed(0)
            module = build(cfg, in_channels=channels)
            row[label] = {"dim": module.descriptor_dim, "params": _count(module)}
        rows.append(row)
    return rows


def backbone_rows() -> list[dict]:
    from vprlab.utils.instantiate import build

    rows = []
    for name in sorted(p.stem for p in (CONF / "backbone").glob("*.yaml")):
        cfg = _compose([f"backbone={name}", "backbone.pretrained=false"])
        with mock.patch.object(timm.models._builder, "load_pretrained", side_effect=RuntimeError("no download")):
            backbone = build(cfg.backbone)
        rows.append({
            "config": name, "model_name": str(cfg.backbone.model_name), "out_channels": backbone.out_channels,
            "stride": backbone.stride, "params": _count(backbone), "trainable": _count(backbone, trainable_only=True),
            "train_size": list(cfg.backbone.train_image_size), "eval_size": list(cfg.backbone.eval_image_size),
            "mean": [round(float(v), 3) for v in backbone.mean], "std": [round(float(v), 3) for v in backbone.std],
        })
        del backbone
    return rows


EXPERIMENTS = (
    "boq_resnet50", "boq_dinov2", "mixvpr_resnet50_4096", "convap_resnet50", "gem_resnet50",
    "cosplace_resnet50", "netvlad_resnet50", "salad_dinov2",
)


def experiment_rows() -> list[dict]:
    from vprlab.models.vpr_model import build_model

    rows = []
    for name in EXPERIMENTS:
        cfg = _compose([f"experiment={name}", "backbone.pretrained=false"])
        model = build_model(cfg.backbone, cfg.aggregator)
        rows.append({
            "experiment": name, "backbone": str(cfg.backbone.model_name), "in_channels": model.backbone.out_channels,
            "dim": model.descriptor_dim, "aggregator_params": _count(model.aggregator),
            "trainable": _count(model, trainable_only=True),
            "train_size": list(cfg.backbone.train_image_size), "eval_size": list(cfg.backbone.eval_image_size),
        })
        del model
    return rows


def aggregator_markdown(aggs: list[dict]) -> str:
    labels = [label for label in aggs[0] if label not in ("aggregator", "paper", "descriptor", "needs")] if aggs else []
    lines = ["| aggregator | paper | descriptor | needs | " + " | ".join(f"{b} dim | {b} params" for b in labels) + " |",
             "|---|---|---|---|" + "---:|---:|" * len(labels)]
    for row in aggs:
        cells = []
        for label in labels:
            cell = row[label]
            cells += ["n/a", "n/a"] if cell is None else [f"{cell['dim']:,}", f"{cell['params']:,}"]
        lines.append(f"| `{row['aggregator']}` | {row['paper']} | {row['descriptor']} | {row['needs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def docs_table(text: str) -> str:
    """The aggregator table of docs/models.md (between the zoo-table markers)."""
    if START not in text or END not in text:
        raise ValueError(f"docs/models.md has no {START} ... {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_docs(aggs: list[dict], path: Path = DOCS) -> None:
    text = path.read_text()
    docs_table(text)  # the markers are there
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{aggregator_markdown(aggs)}\n{END}{rest.split(END, 1)[1]}")


def markdown(aggs: list[dict], bbs: list[dict], exps: list[dict] | None = None) -> str:
    lines = aggregator_markdown(aggs).split("\n")
    if bbs:
        lines += ["", "| backbone | model | channels | stride | params | trainable | train / eval size | mean / std |",
                  "|---|---|---:|---:|---:|---:|---|---|"]
    for row in bbs:
        lines.append(
            f"| `{row['config']}` | `{row['model_name']}` | {row['out_channels']} | {row['stride']} | {row['params']:,} | "
            f"{row['trainable']:,} | {row['train_size'][0]} / {row['eval_size'][0]} | {row['mean']} / {row['std']} |"
        )
    if exps:
        lines += ["", "| experiment | backbone (channels) | dim | aggregator params | trainable params | train / eval size |",
                  "|---|---|---:|---:|---:|---|"]
        for row in exps:
            lines.append(
                f"| `{row['experiment']}` | `{row['backbone']}` ({row['in_channels']}) | {row['dim']:,} | "
                f"{row['aggregator_params']:,} | {row['trainable']:,} | {row['train_size'][0]} / {row['eval_size'][0]} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--no-backbones", action="store_true", help="skip the backbone table (ViT-G takes a while)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the aggregator table in docs/models.md and stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    aggs = aggregator_rows()
    if args.write_docs:
        write_docs(aggs)
        return
    bbs = [] if args.no_backbones else backbone_rows()
    exps = experiment_rows()
    print(markdown(aggs, bbs, exps))
    if args.out:
        atomic_write_text(args.out, json.dumps({"aggregators": aggs, "backbones": bbs, "experiments": exps}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
