"""Run N training steps of the ORIGINAL BoQ training code (PyTorch Lightning) and print step times.

Started by ``measure_train_step.py`` with the Python of an environment that has the original
code's dependencies (lightning, pytorch-metric-learning, faiss, rich, pandas); this file imports
nothing from vprlab. It builds what the original ``train.py`` builds (its ``ResNet`` backbone with
``unfreeze_n_blocks=2``, ``crop_last_block=True``; its ``BoQ``; its ``BoQModel`` with the
MultiSimilarity miner + loss and AdamW; its ``VPRDataModule`` for GSV-Cities with RandAugment(3, 15))
and runs Lightning's ``Trainer.fit`` on the CPU. Changes from the original script, all through
its own arguments or from outside its modules:

- random initial weights: the ResNet constructor is given ``weights=None`` (no download) while the
  backbone still takes its ``pretrained=True`` path, so the frozen stages are those of the script;
- no validation sets, no logger / checkpoint / progress bar, ``max_steps`` = warm-up + measured;
- CPU accelerator, precision ``32-true`` or ``bf16-mixed`` (the script's ``16-mixed`` is for GPUs).

Prints one JSON line: the ``time.perf_counter()`` at the end of every training step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boq-repo", required=True)
    parser.add_argument("--data", required=True, help="GSV-Cities-layout folder (Dataframes/, Images/)")
    parser.add_argument("--steps", type=int, required=True, help="training steps in all (warm-up included)")
    parser.add_argument("--places", type=int, default=8)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--dim", type=int, default=16384)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    for option, folder in (("--boq-repo", args.boq_repo), ("--data", args.data)):
        if not Path(folder).is_dir():
            parser.error(f"{option} {folder}: no such folder")

    sys.path.insert(0, args.boq_repo)
    import torch
    import torchvision
    from lightning.pytorch import Callback, Trainer, seed_everything
    from src.backbones import ResNet
    from src.boq import BoQ
    from src.dataloaders.datamodule import VPRDataModule
    from src.model import BoQModel

    torch.set_num_threads(args.threads)
    seed_everything(args.seed, workers=True)

    # Random weights, the script's freezing (it freezes only on its pretrained path).
    ResNet.AVAILABLE_MODELS = {**ResNet.AVAILABLE_MODELS, "resnet50": lambda weights=None: torchvision.models.resnet50(weights=None)}
    backbone = ResNet(backbone_name="resnet50", pretrained=True, unfreeze_n_blocks=2, crop_last_block=True)
    channel_proj = 512
    aggregator = BoQ(in_channels=backbone.out_channels, proj_channels=channel_proj, num_queries=64, num_layers=2,
                     row_dim=args.dim // channel_proj)
    model = BoQModel(backbone, aggregator, lr=1e-4, lr_mul=0.1, weight_decay=1e-4, warmup_epochs=10,
                     milestones=[10, 20], silent=True)
    datamodule = VPRDataModule(gsv_cities_path=args.data, cities="all", img_per_place=args.images, val_sets={},
                               train_img_size=(args.size, args.size), val_img_size=(args.size, args.size),
                               batch_size=args.places, num_workers=args.num_workers, shuffle=False)

    ends: list[float] = []

    class StepTimes(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            ends.append(time.perf_counter())

    trainer = Trainer(
        accelerator="cpu", devices=1, precision="32-true" if args.precision == "32" else "bf16-mixed",
        max_epochs=1, max_steps=args.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[StepTimes()],
    )
    start = time.perf_counter()
    trainer.fit(model=model, datamodule=datamodule)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(json.dumps({"start": start, "ends": ends, "images_per_step": args.places * args.images,
                      "trainable_params": trainable, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
