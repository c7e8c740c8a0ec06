"""Side-by-side check of vprlab's published families against the ORIGINAL code of each method.

    python experiments/check_published_against_originals.py --originals /tmp/orig

``--originals`` holds the original repositories unpacked by the user (one folder each, named as on
GitHub): cliquemining, salad, Indoor-VPR, EigenPlaces, DINO-Mix, deep-image-retrieval, OpenIBL,
CricaVPR, SuperVLAD, EDTformer, DINO (AnyLoc's hub code), dinov2 and VPR-methods-evaluation (its
``vpr_models/qaa.py`` is QAA's original here: the QAA repository could not be fetched). Nothing is
copied from them: each family's original model class is imported from there at run time, in its own
process (the repositories share module names such as ``models`` and ``utils``).

Per family: the original model is built with its own code (random initialisation), its state dict
keys and shapes are compared with vprlab's release layout (``tests/pretrained/release_layouts/*.tsv``,
exact set and shapes), its tensors are made non-trivial (constant tensors such as BatchNorm
statistics, LayerScale and GeM's p get random offsets) and saved in the release's container, the
original loads that file as its own hub entry / evaluation code does, vprlab loads it with
``vprlab.load_pretrained(name, weights=path)``, and both describe the same PIL images, each through
its own evaluation preprocessing ("own") and through VPR-methods-evaluation's ("vme": VME's input
transform and model wrapper vs vprlab's ``protocol="vpr-methods-evaluation"``). The max absolute
descriptor difference is printed per family. CricaVPR and SuperVLAD-CrossImage mix the images of a
batch (a cross-image encoder): both sides get the images as ONE batch, as the originals' test.py and
VME's database loop feed them, and VME's queries also one at a time, as VME runs them. AnyLoc's ViT-G/14
(4.5 GB, ~10 s per image on a CPU) is replaced on both sides by a ViT-S/14 with ViT-G's SwiGLU
feed-forward and the value facet of block 8 of 12 (AnyLoc's ``AnyLocVladDinov2`` takes the model name and
layer; vprlab's entry gets the same ViT through ``timm_overrides``); the ViT-G key layout is compared on
the meta device. The originals' tensor resizes (torchvision 0.14 / 0.15 pinned) are run with
``antialias=False`` spelt out.

What reaches the network is stubbed, nothing else: ``torch.hub.load`` of a GitHub repository is
served from the local copy (DINOv2 with ``pretrained=False``; ``gmberton/cosplace``, used by
EigenPlaces only to initialise its backbone, by an empty module), ``torch.hub.load_state_dict_from_url``
returns the random release file for the family's own URL and "no weights" for any other (a
``load_state_dict`` of that marker does nothing), VME's ``gdown`` is a module that is never called
(the file is already where VME looks). Also stubbed: dataset modules that refuse to import without
their datasets on disk (cliquemining's ``dataloaders.val``, DINO-Mix's training datasets), modules
not installed here that only data loading / PCA fitting use (OpenIBL's ``cv2``, ``h5py``), a
``.to("cuda:0")`` in DINO-Mix's backbone on a machine without a GPU, SuperVLAD's ``transformers``
import (only its ViT / DeiT backbones use it), AnyLoc's ``fast_pytorch_kmeans`` (only VLAD's fitting
uses it), AnyLoc's ``torch.hub.load`` of DINOv2 gets ``ffn_layer="swiglufused"`` (the small ViT above),
VME's SuperVLAD runs in a temporary working directory (it reads ``trained_models/supervlad/<name>.pth``),
and dirtorch's ``torch.load`` gets ``weights_only=False`` (torch >= 2.6 refuses its pickle by default).
pytorch_lightning, einops and torchsummary must be importable (e.g. a venv on top of the project's:
``python -m venv /tmp/xvenv --system-site-packages && /tmp/xvenv/bin/pip install pytorch_lightning einops torchsummary``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = (REPO.parent / "shared" / "data" / "real" / "gardenspoint_sample10" / "database").glob("*.jpg")
SOURCE_SIZE = (200, 150)  # (W, H) of the PIL images both sides get: small, and not multiples of 14

FAMILIES = ("cliquemining_dinov2_8448", "salad_indoor_dinov2_8448", "eigenplaces_indoor_resnet50_2048",
            "dinomix_dinov2_4096", "apgem_resnet101_2048", "sfrs_vgg16_4096", "cricavpr_dinov2_10752",
            "supervlad_dinov2_3072", "supervlad_crossimage_dinov2_3072", "edtformer_dinov2_4096", "qaa_dinov2_1024",
            "qaa_dinov2_8192", "anyloc_urban_dinov2g_49152")


# ------------------------------------------------------------------ stubs for what reaches the network

NO_WEIGHTS = object()  # what a stubbed download of another release returns; loading it does nothing


@contextlib.contextmanager
def offline_hub(originals: Path, own_urls: dict[str, Path]):
    """``torch.hub.load('owner/name', ...)`` from ``originals/name`` (source='local'), DINOv2 without
    pretrained weights, CosPlace (EigenPlaces' backbone initialisation) as an empty module;
    ``load_state_dict_from_url`` gives the release file for ``own_urls`` and NO_WEIGHTS otherwise."""
    import torch

    real_load, real_url, real_lsd = torch.hub.load, torch.hub.load_state_dict_from_url, torch.nn.Module.load_state_dict

    def hub_load(repo, entry, *args, **kwargs):
        if os.path.isdir(str(repo)):
            return real_load(repo, entry, *args, **kwargs)
        kwargs.pop("source", None)
        owner_name = str(repo).split(":")[0]
        if owner_name == "gmberton/cosplace":
            return torch.nn.Module()
        if owner_name == "facebookresearch/dinov2":
            kwargs["pretrained"] = False
        folder = {d.name.lower(): d for d in originals.iterdir()}[owner_name.split("/")[1].lower()]
        return real_load(str(folder), entry, *args, source="local", **kwargs)

    def from_url(url, *args, **kwargs):
        if url in own_urls:
            return torch.load(own_urls[url], map_location="cpu", weights_only=False)
        return NO_WEIGHTS

    def load_state_dict(self, state_dict, *args, **kwargs):
        if state_dict is NO_WEIGHTS:
            return None
        return real_lsd(self, state_dict, *args, **kwargs)

    torch.hub.load, torch.hub.load_state_dict_from_url, torch.nn.Module.load_state_dict = hub_load, from_url, load_state_dict
    try:
        yield
    finally:
        torch.hub.load, torch.hub.load_state_dict_from_url, torch.nn.Module.load_state_dict = real_load, real_url, real_lsd


def stub_modules(modules: dict[str, dict]) -> None:
    """Empty modules (with the given attributes) in place of modules that cannot be imported here."""
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


def import_from(directory: Path, module: str):
    import importlib

    sys.path.insert(0, str(directory))
    return importlib.import_module(module)


# ------------------------------------------------------------------ common steps


def images(n: int = 2):
    from PIL import Image

    paths = sorted(IMAGES)[:n]
    return [Image.open(p).convert("RGB").resize(SOURCE_SIZE, Image.BILINEAR) for p in paths]


def jitter(state: dict, seed: int) -> dict:
    """The original's random state, with every constant float tensor (BatchNorm weights / biases /
    statistics, LayerScale, GeM p, biases initialised to 0...) given random offsets, so that a key that
    lands on the wrong parameter changes the descriptor."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        value = value.detach().clone()
        if value.is_floating_point() and (value.numel() == 1 or bool((value == value.flatten()[0]).all())):
            noise = torch.randn(value.shape, generator=generator)
            value = 0.5 + torch.rand(value.shape, generator=generator) if key.endswith("running_var") else value + 0.1 * noise
        out[key] = value
    return out


def compare_layout(name: str, state: dict) -> dict:
    """The original's keys / shapes / order against ``tests/pretrained/release_layouts/<name>.tsv``."""
    sys.path.insert(0, str(REPO / "tests" / "pretrained"))
    from published_layouts import read_release_layout

    layout = read_release_layout(name)
    found = {k: tuple(v.shape) for k, v in state.items()}
    return {
        "keys_equal": set(found) == set(layout),
        "missing_in_original": sorted(set(layout) - set(found))[:5],
        "extra_in_original": sorted(set(found) - set(layout))[:5],
        "shapes_differ": sorted(k for k in set(found) & set(layout) if found[k] != layout[k])[:5],
        "order_equal": list(found) == list(layout),
        "n_keys": len(found),
    }


def vprlab_descriptors(name: str, weights: Path, pil_images, protocol: str | None = None):
    import torch

    from vprlab import load_pretrained

    model, transform = load_pretrained(name, weights=weights, protocol=protocol)
    with torch.no_grad():
        return torch.cat([model(transform(im).unsqueeze(0)) for im in pil_images])


def vprlab_batch(name: str, weights: Path, pil_images, protocol: str | None = None):
    """vprlab's descriptors of the images as ONE batch (the cross-image encoders mix a batch)."""
    import torch

    from vprlab import load_pretrained

    model, transform = load_pretrained(name, weights=weights, protocol=protocol)
    with torch.no_grad():
        return model(torch.stack([transform(im) for im in pil_images]))


def run_batch(model, transform, pil_images):
    """The original on the images as ONE batch, as its test.py / VME's database loop feeds them."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.stack([transform(im) for im in pil_images])).reshape(len(pil_images), -1)


def tensor_resize_transform(size, crop=None):
    """ToTensor, ImageNet Normalize, then ``transforms.functional.resize(tensor, size)`` as the originals'
    datasets_ws.py call it: with their pinned torchvision (0.14 / 0.15) a tensor resize is not antialiased,
    so antialias=False is spelt out (a newer torchvision's default would antialias); then a centre crop."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    steps = [T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
             T.Lambda(lambda t: TF.resize(t, list(size), antialias=False))]
    if crop:
        steps.append(T.CenterCrop(crop))
    return T.Compose(steps)


def run_original(model, transform, pil_images):
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(transform(im).unsqueeze(0)).reshape(1, -1) for im in pil_images])


def vme_transform(image_size=None):
    """VME's test_dataset input: ToTensor, ImageNet Normalize, then (if image_size) Resize(antialias)."""
    import torchvision.transforms as T

    steps = [T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
    if image_size:
        steps.append(T.Resize(size=image_size, antialias=True))
    return T.Compose(steps)


def vme_package(originals: Path):
    """VME's ``vpr_models`` as a package whose ``__init__`` (which imports every method, some needing
    submodules and downloads) is not run; its modules import normally."""
    package = types.ModuleType("vpr_models")
    package.__path__ = [str(originals / "VPR-methods-evaluation" / "vpr_models")]
    sys.modules["vpr_models"] = package
    return package


def diff(original, ours) -> dict:
    """max |original - vprlab| over both images' descriptors, beside max |image 0 - image 1| of the
    original's (how far apart two different images are: the scale the difference is to be read against)."""
    if original.shape != ours.shape:
        raise SystemExit(f"descriptor shapes differ: original {tuple(original.shape)}, vprlab {tuple(ours.shape)}")
    return {"max_abs": float((original - ours).abs().max()), "between_images": float((original[0] - original[1]).abs().max()),
            "dim": int(original.shape[1])}


# ------------------------------------------------------------------ the families (each in its own process)


def dinov2_salad(originals: Path, repo: str):
    """``dinov2_salad(pretrained=False)`` of ``repo``'s hubconf (SALAD's network as CliqueMining's
    eval.py builds it: the same backbone / aggregator arguments)."""
    hubconf = import_from(originals / repo, "hubconf")
    return hubconf.dinov2_salad(pretrained=False)


def check_cliquemining(originals: Path, tmp: Path, name: str) -> dict:
    import torch

    stub_modules({"dataloaders.val.NordlandDataset": {"NordlandDataset": None},
                  "dataloaders.val.MapillaryDataset": {"MSLS": None},
                  "dataloaders.val.PittsburghDataset": {"PittsburghDataset": None},
                  "dataloaders.val.SPEDDataset": {"SPEDDataset": None}})
    with offline_hub(originals, {}):
        original = dinov2_salad(originals, "cliquemining")
        evaluation = import_from(originals / "cliquemining", "eval")  # its input_transform
    state = jitter(original.state_dict(), 11)
    path = tmp / "cliquemining.ckpt"
    torch.save({"epoch": 0, "global_step": 0, "state_dict": state}, path)
    original.load_state_dict(torch.load(path)["state_dict"])  # as its eval.py load_model does
    pil = images()
    ours = vprlab_descriptors(name, path, pil)
    result = {"layout": compare_layout(name, state),
              "own": diff(run_original(original, evaluation.input_transform((322, 322)), pil), ours)}
    # VME: serizba/salad's dinov2_salad with this file's state_dict, ResizingWrapper(dino_v2_resize), native input
    for module in [m for m in sys.modules if m.split(".")[0] in ("hubconf", "models", "utils", "vpr_model")]:
        del sys.modules[module]
    sys.path.remove(str(originals / "cliquemining"))
    with offline_hub(originals, {}):
        salad = dinov2_salad(originals, "salad")
    salad.load_state_dict(torch.load(path)["state_dict"])
    vme_package(originals)
    from vpr_models.resizing_wrapper import ResizingWrapper

    vme = run_original(ResizingWrapper(salad, resize_type="dino_v2_resize"), vme_transform(), pil)
    result["vme"] = diff(vme, vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


def check_indoor(originals: Path, tmp: Path, name: str, method: str, backbone: str, dim: int, file_name: str) -> dict:
    import torch

    url = f"https://github.com/Enrico-Chiavassa/Indoor-VPR/releases/download/v0.1.0/{file_name}"
    path = tmp / file_name
    hubconf = import_from(originals / "Indoor-VPR", "hubconf")
    with offline_hub(originals, {}):  # first the random model (no release file yet)
        original = hubconf.get_trained_model(method=method, backbone=backbone, fc_output_dim=dim)
    state = jitter(original.state_dict(), 12)
    torch.save(state, path)
    with offline_hub(originals, {url: path}):  # then the hub entry as VME calls it, loading the file
        original = hubconf.get_trained_model(method=method, backbone=backbone, fc_output_dim=dim)
    pil = images()
    # No evaluation code of its own: the model takes the normalised tensor at any size (VME's input).
    native = vme_transform()
    orig_out = run_original(original, native, pil)
    result = {"layout": compare_layout(name, state), "own": diff(orig_out, vprlab_descriptors(name, path, pil))}
    vme_package(originals)
    from vpr_models.resizing_wrapper import ResizingWrapper

    vme_model = ResizingWrapper(original, resize_type="dino_v2_resize") if method == "salad" else original
    result["vme"] = diff(run_original(vme_model, native, pil), vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


def check_dinomix(originals: Path, tmp: Path, name: str) -> dict:
    import torch

    url = "https://github.com/GaoShuang98/DINO-Mix/releases/download/v1.0.0/dinov2_vitb14_mix.ckpt"
    path = tmp / "dinov2_vitb14_mix.ckpt"
    real_to = torch.nn.Module.to

    def cpu_only_to(self, *args, **kwargs):  # DinoV2_self moves the hub model to "cuda:0" unconditionally
        if args and str(args[0]).startswith("cuda") and not torch.cuda.is_available():
            return self
        return real_to(self, *args, **kwargs)

    torch.nn.Module.to = cpu_only_to
    stub_modules({"dataloaders.GSVCitiesDataset": {"GSVCitiesDataset": None},
                  "dataloaders.PittsburgDataset": {}, "dataloaders.MapillaryDataset": {}})
    hubconf = import_from(originals / "DINO-Mix", "hubconf")
    with offline_hub(originals, {}):
        original = hubconf.dino_mix(pretrained=False)
    state = jitter(original.state_dict(), 13)
    torch.save({"epoch": 0, "state_dict": state}, path)
    with offline_hub(originals, {url: path}):
        original = hubconf.dino_mix(pretrained=True)  # its own loading of the release file
    from dataloaders.GSVCitiesDataloader import GSVCitiesDataModule

    valid = GSVCitiesDataModule(image_size=(224, 224), show_data_stats=False).valid_transform
    pil = images()
    result = {"layout": compare_layout(name, state), "own": diff(run_original(original, valid, pil), vprlab_descriptors(name, path, pil))}
    # VME: its own copy (vpr_models/dinomix.py get_dino_mix), parser.py's --image_size 224 224
    vme_package(originals)
    with offline_hub(originals, {url: path}):
        from vpr_models import dinomix as vme_dinomix

        vme_model = vme_dinomix.get_dino_mix()
    vme = run_original(vme_model, vme_transform([224, 224]), pil)
    result["vme"] = diff(vme, vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


def check_apgem(originals: Path, tmp: Path, name: str) -> dict:
    import numpy as np
    import sklearn.decomposition
    import torch
    import torchvision.transforms as T

    sys.path.insert(0, str(originals / "deep-image-retrieval"))
    os.environ["DB_ROOT"] = ""
    from dirtorch import nets

    # model_options of the real file are not readable here: hloc's / VME's conf (GeM, p=3, 2048-d)
    options = {"arch": "resnet101_rmac", "out_dim": 2048, "pooling": "gem", "gemp": 3}
    net = nets.create_model(pretrained="", **options)
    state = jitter(net.state_dict(), 14)
    generator = np.random.default_rng(14)
    vme_package(originals)
    sys.modules["sklearn.decomposition.pca"] = sklearn.decomposition._pca
    pil = images()
    result = {"layout": compare_layout(name, state)}
    for whiten in (True, False):  # whether the released PCA was fitted with whiten=True is not readable here
        pca = sklearn.decomposition.PCA(n_components=2048, whiten=whiten)
        pca.mean_ = generator.normal(0, 0.02, 2048)
        pca.components_ = np.linalg.qr(generator.normal(size=(2048, 2048)))[0]
        pca.explained_variance_ = generator.uniform(1e-4, 1e-2, 2048)
        hub = tmp / f"hub_whiten_{whiten}"
        path = hub / "dirtorch" / "Resnet-101-AP-GeM.pt"
        path.parent.mkdir(parents=True)
        sklearn.decomposition.PCA.__module__ = "sklearn.decomposition.pca"  # the released file's (sklearn < 0.24) class path
        torch.save({"state_dict": state, "model_options": options, "preprocess": net.preprocess,
                    "pca": {"Landmarks_clean": pca}}, path)
        sklearn.decomposition.PCA.__module__ = "sklearn.decomposition._pca"
        torch.hub.set_dir(str(hub))
        real_load = torch.load
        torch.load = functools.partial(real_load, weights_only=False)  # dirtorch's load_checkpoint (a full pickle)
        from vpr_models import apgem as vme_apgem

        original = vme_apgem.GeM()  # dirtorch's load_model + whiten_features (whitenp 0.25), VME's wrapper
        torch.load = real_load
        # dirtorch test_dir.py's default: no test transform, the net's own preprocess mean / std, native size
        preprocess = original.net.preprocess
        own = T.Compose([T.ToTensor(), T.Normalize(mean=preprocess["mean"], std=preprocess["std"])])
        own_diff = diff(run_original(original, own, pil).float(), vprlab_descriptors(name, path, pil))
        if whiten:
            result["own"] = own_diff
            result["vme"] = diff(run_original(original, vme_transform(), pil).float(),
                                 vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
        else:
            result["pca_fitted_without_whiten"] = own_diff
    return result


def check_sfrs(originals: Path, tmp: Path, name: str) -> dict:
    import numpy as np
    import torch

    url = "https://github.com/yxgeee/OpenIBL/releases/download/v0.1.0-beta/vgg16_netvlad.pth"
    path = tmp / "vgg16_netvlad.pth"
    stub_modules({"cv2": {}, "h5py": {}})  # imported by OpenIBL's data loading and PCA fitting only (not installed here)
    hubconf = import_from(originals / "OpenIBL", "hubconf")
    original = hubconf.vgg16_netvlad(pretrained=False)
    # NetVLAD initialised by OpenIBL's own _init_params (from cluster centres and training descriptors,
    # here random unit vectors), so that the soft assignment is selective and images differ
    generator = np.random.default_rng(15)
    unit = lambda rows: (lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))(generator.normal(size=(rows, 512)))
    original.net_vlad.clsts, original.net_vlad.traindescs = unit(64), unit(2000)
    original.net_vlad._init_params()
    state = jitter(original.state_dict(), 15)
    torch.save(state, path)
    with offline_hub(originals, {url: path}):
        original = hubconf.vgg16_netvlad(pretrained=True)  # its own loading of the release file
    from ibl.utils.data import get_transformer_test

    pil = images()
    own = run_original(original, get_transformer_test(480, 640), pil)
    result = {"layout": compare_layout(name, state), "own": diff(own, vprlab_descriptors(name, path, pil))}
    vme_package(originals)
    with offline_hub(originals, {url: path}):
        from vpr_models import sfrs as vme_sfrs

        vme_model = vme_sfrs.SFRSModel()
    ours = vprlab_descriptors(name, path, pil, "vpr-methods-evaluation")
    result["vme"] = diff(run_original(vme_model, vme_transform(), pil), ours)
    # VME's UnNormalize zips over the batch dimension, not the channels: image i of a batch is
    # un-normalised with channel i's mean / std for all three channels (queries, batch 1: channel 0's).
    # The same model with a per-channel un-normalisation, to show that this is the whole difference:
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    vme_model.un_normalize = lambda images: images * std + mean
    result["vme_per_channel_unnormalize"] = diff(run_original(vme_model, vme_transform(), pil), ours)
    return result


def batch_effect(batched, alone) -> dict:
    """How far the original's descriptors in one batch are from the same images run alone (the scale a
    batch-order mistake would show at)."""
    return {"max_abs": float((batched - alone).abs().max())}


def check_cricavpr(originals: Path, tmp: Path, name: str) -> dict:
    import torch

    url = "https://github.com/Lu-Feng/CricaVPR/releases/download/v1.0/CricaVPR.pth"
    path = tmp / "CricaVPR.pth"
    hubconf = import_from(originals / "CricaVPR", "hubconf")
    original = torch.nn.DataParallel(sys.modules["network"].CricaVPRNet())  # what hubconf.trained_model builds
    state = jitter(original.state_dict(), 16)
    torch.save({"model_state_dict": state}, path)
    with offline_hub(originals, {url: path}):
        original = hubconf.trained_model()  # its own loading of the release file
    pil = images(4)
    # test.py: the images in one batch of infer_batch_size (16, Pitts 8), datasets_ws.py's tensor resize to 224x224
    own = run_batch(original, tensor_resize_transform((224, 224)), pil)
    result = {"layout": compare_layout(name, state), "own": diff(own, vprlab_batch(name, path, pil))}
    result["original_batch_vs_alone"] = batch_effect(own, run_original(original, tensor_resize_transform((224, 224)), pil))
    vme_package(originals)
    from vpr_models.resizing_wrapper import ResizingWrapper

    vme_model = ResizingWrapper(original, resize_type=224)  # VME: hub trained_model, ResizingWrapper(224)
    result["vme"] = diff(run_batch(vme_model, vme_transform(), pil), vprlab_batch(name, path, pil, "vpr-methods-evaluation"))
    result["vme_queries_alone"] = diff(run_original(vme_model, vme_transform(), pil),
                                       vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


def check_supervlad(originals: Path, tmp: Path, name: str, method: str, cross: bool) -> dict:
    import torch

    stub_modules({"transformers": {"ViTModel": None, "DeiTModel": None}})  # only its ViT/DeiT backbones use it
    sys.path.insert(0, str(originals / "SuperVLAD"))
    from model import network

    import util

    # eval.py / train.py arguments of the released models: --backbone=dinov2 --supervlad_clusters=4
    # --ghost_clusters=1 (--crossimage_encoder), no fc layer
    args = argparse.Namespace(backbone="dinov2", crossimage_encoder=cross, supervlad_clusters=4, ghost_clusters=1,
                              fc_output_dim=None, freeze_te=8, trunc_te=None, pretrain="imagenet", aggregation="supervlad",
                              device="cpu", resume=None)
    model = network.SuperVLADModel(args)
    state = jitter(torch.nn.DataParallel(model).state_dict(), 17)  # train.py saves the DataParallel model
    path = tmp / f"{method}.pth"
    torch.save({"epoch": 0, "model_state_dict": state, "best_r5": 0.0}, path)
    args.resume = str(path)
    original = torch.nn.DataParallel(util.resume_model(args, network.SuperVLADModel(args)))  # eval.py's loading
    pil = images(4)
    own = run_batch(original, tensor_resize_transform((322, 322)), pil)  # test.py: one batch, 322x322
    result = {"layout": compare_layout(name, state), "own": diff(own, vprlab_batch(name, path, pil))}
    if cross:
        result["original_batch_vs_alone"] = batch_effect(own, run_original(original, tensor_resize_transform((322, 322)), pil))
    # VME: its own SuperVLADModel (vpr_models/supervlad.py, DINOv2 from the hub), the file where it looks
    # (trained_models/supervlad/<name>.pth under the working directory), dino_v2_resize, --image_size 322 322
    os.chdir(tmp)
    (tmp / "trained_models" / "supervlad").mkdir(parents=True)
    os.link(path, tmp / "trained_models" / "supervlad" / f"{method}.pth")
    vme_package(originals)
    with offline_hub(originals, {}):
        from vpr_models import supervlad as vme_supervlad
        from vpr_models.resizing_wrapper import ResizingWrapper

        vme_model = ResizingWrapper(vme_supervlad.get_supervlad(method), resize_type="dino_v2_resize")
    result["vme"] = diff(run_batch(vme_model, vme_transform([322, 322]), pil),
                         vprlab_batch(name, path, pil, "vpr-methods-evaluation"))
    if cross:
        result["vme_queries_alone"] = diff(run_original(vme_model, vme_transform([322, 322]), pil),
                                           vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


def check_edtformer(originals: Path, tmp: Path, name: str) -> dict:
    import torch

    url = "https://github.com/Tong-Jin01/EDTformer/releases/download/v1.0.0/EDTformer.pth"
    path = tmp / "EDTformer.pth"
    hubconf = import_from(originals / "EDTformer", "hubconf")
    original = torch.nn.DataParallel(sys.modules["network"].VPRNet())
    state = jitter(original.state_dict(), 18)
    torch.save({"model_state_dict": state}, path)
    with offline_hub(originals, {url: path}):
        original = hubconf.EDTformer()
    pil = images()
    own = run_original(original, tensor_resize_transform((322, 322)), pil)  # datasets_ws.py: 322x322 tensor resize
    result = {"layout": compare_layout(name, state), "own": diff(own, vprlab_descriptors(name, path, pil))}
    vme_package(originals)
    from vpr_models.resizing_wrapper import ResizingWrapper

    vme_model = ResizingWrapper(original, resize_type="dino_v2_resize")  # VME: the hub entry, dino_v2_resize
    result["vme"] = diff(run_original(vme_model, vme_transform(), pil),
                         vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


def check_qaa(originals: Path, tmp: Path, name: str, dim: int) -> dict:
    import torchvision.transforms as T

    # The QAA repository could not be fetched: VME's vpr_models/qaa.py is the original here. Its config
    # (written by PyTorchModelHubMixin as config.json) with what vprlab builds: final norm, dim / 128 clusters.
    config = {"backbone_arch": "dinov2_vitb14", "backbone_config": {"norm_layer": True},
              "agg_config": {"num_clusters": dim // 128, "cluster_dim": 128}}
    vme_package(originals)
    from vpr_models import qaa as vme_qaa
    from vpr_models.resizing_wrapper import ResizingWrapper

    with offline_hub(originals, {}):
        model = vme_qaa.QAA(config)
        model.load_state_dict(jitter(model.state_dict(), 19))
        model.save_pretrained(tmp / f"QAA-{dim}")  # config.json + model.safetensors, as on the hub
        original = vme_qaa.QAA.from_pretrained(str(tmp / f"QAA-{dim}"))  # what get_qaa does with the repo id
    from safetensors.torch import load_file

    path = tmp / f"QAA-{dim}" / "model.safetensors"
    state = load_file(path)
    pil = images()
    # QAA's own evaluation transform as vprlab's docs state it (the repository was not readable here):
    # PIL resize to 322x322 bilinear, ToTensor, ImageNet Normalize
    own = T.Compose([T.Resize((322, 322), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                     T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    result = {"layout": compare_layout(name, state),
              "own": diff(run_original(original, own, pil), vprlab_descriptors(name, path, pil))}
    # VME: ResizingWrapper(get_qaa(...), "dino_v2_resize") behind parser.py's --image_size 322 322
    vme_model = ResizingWrapper(original, resize_type="dino_v2_resize")
    result["vme"] = diff(run_original(vme_model, vme_transform([322, 322]), pil),
                         vprlab_descriptors(name, path, pil, "vpr-methods-evaluation"))
    return result


ANYLOC_SMALL = {"depth": 12, "embed_dim": 384, "num_heads": 6, "mlp_ratio": 2048 / 384}  # ViT-S/14 with ViT-G's SwiGLU
ANYLOC_SMALL_LAYER = 8


def check_anyloc(originals: Path, tmp: Path, name: str) -> dict:
    """AnyLoc's own AnyLocVladDinov2 (model_wrapper.py) on DINOv2 ViT-S/14 built by dinov2's own hub code
    with ViT-G's SwiGLU feed-forward (``ffn_layer="swiglufused"``), the value facet of block 8, 32 random
    centres; vprlab's registered entry with the same ViT through ``timm_overrides``. The ViT-G layout itself
    is compared on the meta device (dinov2's ``dinov2_vitg14``, as AnyLoc's extractor loads it)."""
    import dataclasses

    import torch

    stub_modules({"fast_pytorch_kmeans": {"KMeans": lambda *a, **k: types.SimpleNamespace()}})  # only VLAD.fit's clustering
    with offline_hub(originals, {}):
        with torch.device("meta"):
            vitg = torch.hub.load("facebookresearch/dinov2", "dinov2_vitg14")
    layout = compare_layout("dinov2_vitg14_pretrain", vitg.state_dict())  # the second file of every anyloc_* model
    from published_layouts import read_release_layout

    # the vocabulary's layout: 32 centres as wide as ViT-G's value facet (hubconf.py asserts 32, VLAD uses the width)
    vocabulary_equal = read_release_layout(name) == {"c_centers": (32, vitg.embed_dim)}
    del vitg
    centres = torch.randn(32, 384, generator=torch.Generator().manual_seed(20))

    with offline_hub(originals, {}):
        inner = torch.hub.load
        torch.hub.load = lambda repo, entry, *a, **k: inner(repo, entry, *a, ffn_layer="swiglufused", **k)
        model_wrapper = import_from(originals / "DINO", "model_wrapper")
        original = model_wrapper.AnyLocVladDinov2(centres, dino_model="dinov2_vits14", layer=ANYLOC_SMALL_LAYER,
                                                  facet="value", num_c=32, device="cpu")
        torch.hub.load = inner
    dino = original.dino_extractor.dino_model
    state = jitter(dino.state_dict(), 21)
    dino.load_state_dict(state)  # as dinov2's hub entry loads its file (strict)
    vocabulary = tmp / "dinov2_vitg14_l31_value_c32_urban_c_centers.pt"
    torch.save(centres, vocabulary)
    torch.save(state, tmp / "dinov2_vitg14_pretrain.pth")
    from vprlab.pretrained import registry

    spec = registry.published_model(name)
    registry._PUBLISHED[name] = dataclasses.replace(
        spec, options={**spec.options, "timm_overrides": ANYLOC_SMALL, "facet_layer": ANYLOC_SMALL_LAYER})
    pil = images()
    # AnyLoc's VG evaluation: tensor resize to 480x640 (torchvision 0.14.1: no antialiasing), centre crop 476x630
    own = run_original(original, tensor_resize_transform((480, 640), crop=(476, 630)), pil)
    result = {"layout": layout, "own": diff(own, vprlab_descriptors(name, vocabulary, pil))}
    # hard assignment: a cluster without patches gives a zero block; many used clusters = the comparison covers it
    result["vocabulary_layout_equal"] = vocabulary_equal
    result["clusters_used_per_image"] = [int((block.abs().sum(-1) > 0).sum()) for block in own.reshape(len(pil), 32, -1)]
    vme_package(originals)
    from vpr_models.resizing_wrapper import ResizingWrapper

    vme_model = ResizingWrapper(original, resize_type="dino_v2_resize")
    result["vme"] = diff(run_original(vme_model, vme_transform(), pil),
                         vprlab_descriptors(name, vocabulary, pil, "vpr-methods-evaluation"))
    return result


def check_anyloc_vitg(originals: Path, tmp: Path, key: str) -> dict:
    """The real ViT-G/14 once (``--families anyloc_vitg_56x56``: 4.5 GB models and a 4.5 GB file; the
    original is freed before vprlab's model is built; about 1 minute on 2 CPU cores): AnyLoc's own ``AnyLocVladDinov2`` with its defaults
    (dinov2_vitg14, layer 31, value facet, 32 centres) and vprlab's anyloc_urban_dinov2g_49152 on the same
    normalised 2x3x56x56 tensor (the preprocessing is compared by anyloc_urban_dinov2g_49152 above)."""
    import gc

    import torch

    from vprlab import load_pretrained

    name = "anyloc_urban_dinov2g_49152"
    stub_modules({"fast_pytorch_kmeans": {"KMeans": lambda *a, **k: types.SimpleNamespace()}})  # only VLAD.fit's clustering
    generator = torch.Generator().manual_seed(22)
    centres = torch.randn(32, 1536, generator=generator)
    with offline_hub(originals, {}):
        model_wrapper = import_from(originals / "DINO", "model_wrapper")
        original = model_wrapper.AnyLocVladDinov2(centres)  # its defaults: the released combination
    dino = original.dino_extractor.dino_model
    state = dino.state_dict()
    with torch.no_grad():  # jitter's offsets in place (no second 4.5 GB copy)
        for value in state.values():
            if value.is_floating_point() and bool((value == value.flatten()[0]).all()):
                value.add_(0.1 * torch.randn(value.shape, generator=generator))
    torch.save(state, tmp / "dinov2_vitg14_pretrain.pth")  # Meta's container: a bare state dict
    torch.save(centres, tmp / "dinov2_vitg14_l31_value_c32_urban_c_centers.pt")
    layout = compare_layout("dinov2_vitg14_pretrain", state)
    x = torch.randn(2, 3, 56, 56, generator=generator)
    original.eval()
    with torch.no_grad():
        reference = original(x)
    del original, dino, state
    gc.collect()
    model, _ = load_pretrained(name, weights=tmp / "dinov2_vitg14_l31_value_c32_urban_c_centers.pt")
    with torch.no_grad():
        ours = model(x)
    clusters = [int((block.abs().sum(-1) > 0).sum()) for block in reference.reshape(2, 32, -1)]
    return {"layout": layout, "own": diff(reference, ours), "clusters_used_per_image": clusters}


CHECKS = {
    "cliquemining_dinov2_8448": check_cliquemining,
    "salad_indoor_dinov2_8448": functools.partial(check_indoor, method="salad", backbone="Dinov2", dim=8448,
                                                  file_name="salad_Dinov2_8448_GB1_10_25.pth"),
    "eigenplaces_indoor_resnet50_2048": functools.partial(check_indoor, method="eigenplaces", backbone="ResNet50", dim=2048,
                                                          file_name="eigenplaces_ResNet50_2048_GB1_BAI_5_10.pth"),
    "dinomix_dinov2_4096": check_dinomix,
    "apgem_resnet101_2048": check_apgem,
    "sfrs_vgg16_4096": check_sfrs,
    "cricavpr_dinov2_10752": check_cricavpr,
    "supervlad_dinov2_3072": functools.partial(check_supervlad, method="SuperVLAD", cross=False),
    "supervlad_crossimage_dinov2_3072": functools.partial(check_supervlad, method="SuperVLAD-CrossImage", cross=True),
    "edtformer_dinov2_4096": check_edtformer,
    "qaa_dinov2_1024": functools.partial(check_qaa, dim=1024),
    "qaa_dinov2_8192": functools.partial(check_qaa, dim=8192),
    "anyloc_urban_dinov2g_49152": check_anyloc,
    "anyloc_vitg_56x56": check_anyloc_vitg,  # not in FAMILIES: name it with --families (memory)
}


def worker(name: str, originals: Path) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    stub_modules({"gdown": {}})  # VME's Google Drive downloader: imported by its model files, never called here
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        result = CHECKS[name](originals, Path(tmp), name)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--originals", type=Path, required=True, help="folder holding the unpacked original repositories")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(CHECKS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    originals = args.originals.resolve()
    if args.worker:
        worker(args.worker, originals)
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    failed = False
    print(f"{'family':34} {'dim':>5} {'keys=':6} {'shapes=':8} {'order=':7} {'max|diff| own':>14} {'max|diff| vme':>14} "
          f"{'(2 images apart)':>16}")
    for name in args.families:
        proc = subprocess.run([sys.executable, __file__, "--originals", str(originals), "--worker", name],
                              capture_output=True, text=True, cwd=tempfile.gettempdir(), env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            failed = True
            print(f"{name:34} FAILED\n{proc.stderr[-3000:]}")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        layout = result["layout"]
        own, vme = result["own"], result.get("vme")
        vme_text = f"{vme['max_abs']:14.3e}" if vme else f"{'-':>14}"
        print(f"{name:34} {own['dim']:5d} {str(layout['keys_equal']):6} {str(not layout['shapes_differ']):8} "
              f"{str(layout['order_equal']):7} {own['max_abs']:14.3e} {vme_text} {own['between_images']:16.3e}")
        for key, value in result.items():
            if key not in ("layout", "own", "vme"):
                print(f"    {key}: " + (f"max|diff| {value['max_abs']:.3e}" if isinstance(value, dict) else str(value)))
        if not layout["keys_equal"] or layout["shapes_differ"]:
            failed = True
            print(f"    layout ({layout['n_keys']} keys in the original): missing {layout['missing_in_original']}, "
                  f"extra {layout['extra_in_original']}, shapes {layout['shapes_differ']}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
