import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_tensor

from vprlab.evaluation.descriptors import (
    extract_descriptors,
    extract_descriptors_timed,
    resolve_amp_dtype,
)
from vprlab.evaluation.settings import EvalSettings


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class TupleModel(nn.Module):
    """Returns (descriptor, extras) like an aggregator with attention maps."""

    def __init__(self):
        super().__init__()
        self.inner = _tiny_model()

    def forward(self, x):
        return self.inner(x), ["attention"]


@pytest.fixture
def image_paths(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    Image.fromarray(rng.integers(0, 256, (8, 10), dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    paths.append(tmp_path / "gray.png")  # grayscale file: must come out as 3 channels
    return paths


def _manual(model, paths):
    images = torch.stack([to_tensor(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return model.eval()(images).numpy()


def test_matches_manual_forward_in_order(image_paths):
    model = _tiny_model()
    descriptors = extract_descriptors(model, image_paths, to_tensor, EvalSettings(batch_size=4, progress=False))
    assert descriptors.dtype == np.float32
    assert descriptors.shape == (6, 4)
    np.testing.assert_allclose(descriptors, _manual(model, image_paths), rtol=1e-5, atol=1e-6)


def test_tuple_output_timing_and_mode_restored(image_paths):
    model = TupleModel().train()
    result = extract_descriptors_timed(model, image_paths, to_tensor, EvalSettings(batch_size=2, progress=False))
    assert model.training
    assert result.images_per_second > 0 and result.seconds > 0
    np.testing.assert_allclose(result.descriptors, _manual(model.inner, image_paths), rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu_is_close(image_paths):
    model = _tiny_model()
    descriptors = extract_descriptors(model, image_paths, to_tensor, EvalSettings(amp_dtype="bf16", progress=False))
    assert descriptors.dtype == np.float32
    np.testing.assert_allclose(descriptors, _manual(model, image_paths), atol=5e-2)


def test_unreadable_and_missing_images_name_the_path(tmp_path, image_paths):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(OSError, match="broken.png"):
        extract_descriptors(_tiny_model(), [image_paths[0], broken], to_tensor, EvalSettings(progress=False))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        extract_descriptors(_tiny_model(), [tmp_path / "missing.png"], to_tensor, EvalSettings(progress=False))


def test_bad_model_output_and_empty_input(image_paths):
    with pytest.raises(ValueError, match=r"\[batch, descriptor_dim\]"):
        extract_descriptors(nn.Identity(), image_paths[:1], to_tensor, EvalSettings(progress=False))
    with pytest.raises(ValueError, match="no images"):
        extract_descriptors(_tiny_model(), [], to_tensor, EvalSettings(progress=False))


def test_resolve_amp_dtype():
    assert resolve_amp_dtype(None) is None
    assert resolve_amp_dtype("fp32") is None
    assert resolve_amp_dtype(torch.float32) is None
    assert resolve_amp_dtype("bf16") is torch.bfloat16
    assert resolve_amp_dtype("torch.float16") is torch.float16
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_amp_dtype("fp8")


def test_jpegs_decoded_to_tensors_give_bit_identical_inputs_on_real_images(monkeypatch):
    from conftest import SHARED

    from vprlab.data.transforms import eval_transform
    from vprlab.evaluation import descriptors
    from vprlab.evaluation.descriptors import ImagePathDataset

    paths = sorted((SHARED / "data" / "real").rglob("*.jpg"))
    if not paths:
        pytest.skip("../shared/data/real is not here")
    tensor_decodes = []
    real_read = descriptors.read_encoded
    monkeypatch.setattr(descriptors, "read_encoded", lambda p: tensor_decodes.append(p) or real_read(p))
    transform = eval_transform((60, 80))
    fast = ImagePathDataset(paths, transform)
    pil_only = ImagePathDataset(paths, lambda image: transform(image))  # not a Compose: always PIL
    for i in range(len(paths)):
        assert torch.equal(fast[i], pil_only[i]), paths[i]
    assert len(tensor_decodes) == len(paths) == 242  # Corridor and Gardens Point: all plain JPEGs


def test_exif_rotated_jpegs_pngs_and_cmyk_keep_the_pil_path(tmp_path, monkeypatch):
    from vprlab.data.transforms import eval_transform
    from vprlab.evaluation import descriptors
    from vprlab.evaluation.descriptors import ImagePathDataset

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW": TorchCodec applies it, PIL (and the published pipeline) does not
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(pixels).save(tmp_path / "plain.jpg")
    tensor_decodes = []
    real_read = descriptors.read_encoded
    monkeypatch.setattr(descriptors, "read_encoded", lambda p: tensor_decodes.append(p) or real_read(p))
    transform = eval_transform((20, 30))
    names = ["rotated.jpg", "plain.png", "cmyk.jpg", "plain.jpg"]
    dataset = ImagePathDataset([tmp_path / n for n in names], transform)
    for i, name in enumerate(names):
        with Image.open(tmp_path / name) as image:
            assert torch.equal(dataset[i], transform(image.convert("RGB"))), name
    assert tensor_decodes == [str(tmp_path / "plain.jpg")]
