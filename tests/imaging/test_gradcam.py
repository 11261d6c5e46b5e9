import numpy as np
import pytest
import torch
from PIL import Image

from imaging.gradcam import grad_cam, overlay_heatmap, save_grad_cam
from imaging.models import CXRFindingModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CXRFindingModel(arch="small", findings=("effusion", "edema"), image_size=32)


def test_heatmap_shape_range_and_mode(model, effusion_images):
    model.train()
    h = grad_cam(model, effusion_images[0][1], "edema")
    assert h.shape == (32, 32) and h.dtype == np.float32
    assert h.min() >= 0 and h.max() <= 1 and (h.max() == 1 or h.max() == 0)
    assert model.training  # restored
    assert all(p.grad is None for p in model.parameters())


def test_heatmap_follows_the_evidence():
    # a hand-built model whose logit is the mean brightness of the right half: Grad-CAM must light it
    m = CXRFindingModel(arch="small", findings=("f",), image_size=32)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    m.trunk = torch.nn.Sequential(torch.nn.Identity())
    m.head = torch.nn.Linear(1, 1)
    with torch.no_grad():
        m.head.weight.fill_(1.0)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1.0
    m.feature_map = lambda x: ((x - 0.5) / 0.25 + 2.0) * mask  # keeps the graph, zero on the left half
    img = np.random.default_rng(0).integers(50, 200, (32, 32), dtype=np.uint8)
    h = grad_cam(m, img, "f")
    assert h[:, :15].max() < 0.05 and h[:, 17:].mean() > 0.3


def test_unknown_finding(model, effusion_images):
    with pytest.raises(KeyError, match="consolidation"):
        grad_cam(model, effusion_images[0][0], "consolidation")


def test_overlay_and_png(model, effusion_images, tmp_path):
    img = effusion_images[0][0]
    h = np.zeros((32, 32), np.float32)
    ov = overlay_heatmap(img, h)
    assert ov.shape == (32, 32, 3) and np.array_equal(ov[..., 0], img)  # no heat: the radiograph itself
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    heat = save_grad_cam(model, src, "effusion", tmp_path / "out" / "cam.png")
    out = np.asarray(Image.open(tmp_path / "out" / "cam.png"))
    assert out.shape == (32, 32, 3) and heat.shape == (32, 32)
