"""CliqueMining (Izquierdo and Civera, ECCV 2024): SALAD's network (DINOv2 ViT-B/14 + SALAD, 8448-d)
trained with another batch mining, released as a PyTorch Lightning checkpoint whose ``state_dict``
holds exactly the keys of SALAD's ``dino_salad.ckpt`` (its own ``eval.py`` and
VPR-methods-evaluation load ``torch.load(file)["state_dict"]`` strictly into SALAD's model). Built,
converted and exported by :mod:`.salad`; the Lightning wrapper is taken off by
:func:`vprlab.utils.weights.read_state_dict`. The file is on Google Drive (no URL)."""

from __future__ import annotations

from vprlab.pretrained.families._common import FAMILIES_MODULE, VME_DINO
from vprlab.pretrained.families.salad import SALAD_EVAL
from vprlab.pretrained.registry import PublishedModel, register

_SALAD = f"{FAMILIES_MODULE}.salad"
DRIVE_ID = "1B06ysb-Wjb4KDcNrl-7pyj1mJve1jqdk"

register(PublishedModel(
    name="cliquemining_dinov2_8448", method="CliqueMining", paper="Izquierdo and Civera, ECCV 2024",
    backbone="DINOv2 ViT-B/14", descriptor_dim=8448, file_name="cliquemining.ckpt", url=None, container="torch",
    preprocessing=SALAD_EVAL,  # its README: "to evaluate, follow the same steps as with SALAD" (322x322)
    build=f"{_SALAD}:build_salad", convert=f"{_SALAD}:convert_salad",
    configs=f"{_SALAD}:configs_salad", export=f"{_SALAD}:export_salad",
    manual_download=f"Google Drive file id {DRIVE_ID} (https://drive.google.com/file/d/{DRIVE_ID}/view, "
                    "the link in github.com/serizba/cliquemining's README)",
    note="a Lightning checkpoint ({'state_dict': ...}); VPR-methods-evaluation saves it as trained_models/cliquemining.ckpt",
    repo="serizba/cliquemining", protocols={"vpr-methods-evaluation": VME_DINO},
))
