"""Descriptor sizes and parameter counts of every aggregator config on ResNet50 and DINOv2-B, and of
every backbone config: the numbers of the zoo tables in docs/models.md.

    python experiments/zoo_table.py            # prints the markdown tables (aggregators, backbones, experiments)
    python experiments/zoo_table.py --out zoo.json

Everything is built from conf/ with ``backbone.pretrained=false`` (no download; counts do not depend
on the weights). Aggregators keep their config defaults; MixVPR's in_h x in_w is the map of the
backbone's training size (ResNet50 320 / 16 = 20, DINOv2-B 280 / 14 = 20), SALAD runs on DINOv2 only.
Parameters are all of the aggregator's (they all train); for backbones, all and trainable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import timm
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

PAPERS = {
    "avg": "global average pooling (baseline)",
    "mac": "Tolias et al., ICLR 2016",
    "gem": "Radenović et al., TPAMI 2018",
    "cosplace": "Berton et al., CVPR 2022",
    "convap": "Ali-bey et al., Neurocomputing 2022 (GSV-Cities)",
    "mixvpr": "Ali-bey et al., WACV 2023",
    "netvlad": "Arandjelović et al., CVPR 2016",
    "salad": "Izquierdo & Civera, CVPR 2024",
    "boq": "Ali-bey et al., CVPR 2024",
}
TABLE_BACKBONES = {"ResNet50": "resnet50", "DINOv2-B": "dinov2"}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def aggregator_rows() -> list[dict]:
    from vprlab.utils.instantiate import build

    rows = []
    backbones = {}
    for label, name in TABLE_BACKBONES.items():
        cfg = _compose([f"backbone={name}", "backbone.pretrained=false"])
        backbones[label] = (build(cfg.backbone), cfg)
    for aggregator in sorted(p.stem for p in (CONF / "aggregator").glob("*.yaml")):
        row = {"aggregator": aggregator, "paper": PAPERS.get(aggregator, "")}
        for label, (backbone, bcfg) in backbones.items():
            if aggregator == "salad" and not label.startswith("DINOv2"):
                row[label] = None  # needs a class token
                continue
            cfg = _compose([f"backbone={TABLE_BACKBONES[label]}", f"aggregator={aggregator}"])
            if aggregator == "mixvpr":
                height, width = (s // backbone.stride for s in bcfg.backbone.train_image_size)
                cfg.aggregator.in_h, cfg.aggregator.in_w = height, width
            module = build(cfg.aggregator, in_channels=backbone.out_channels)
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


def markdown(aggs: list[dict], bbs: list[dict], exps: list[dict] | None = None) -> str:
    lines = ["| aggregator | paper | " + " | ".join(f"{b} dim | {b} params" for b in TABLE_BACKBONES) + " |",
             "|---|---|" + "---:|---:|" * len(TABLE_BACKBONES)]
    for row in aggs:
        cells = []
        for label in TABLE_BACKBONES:
            cell = row[label]
            cells += ["n/a", "n/a"] if cell is None else [f"{cell['dim']:,}", f"{cell['params']:,}"]
        lines.append(f"| `{row['aggregator']}` | {row['paper']} | " + " | ".join(cells) + " |")
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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    aggs = aggregator_rows()
    bbs = [] if args.no_backbones else backbone_rows()
    exps = experiment_rows()
    print(markdown(aggs, bbs, exps))
    if args.out:
        args.out.write_text(json.dumps({"aggregators": aggs, "backbones": bbs, "experiments": exps}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
