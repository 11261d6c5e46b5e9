import numpy as np
import pytest
import torch
from PIL import Image

from imaging.gradcam import grad_cam, lung_heat_fraction, overlay_heatmap, save_grad_cam, target_layer
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


class _RightHalf(torch.nn.Module):
    """A trunk whose one-channel map is the (shifted) image on the right half and zero on the left."""

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., x.shape[-1] // 2:] = 1.0
        return (x + 2.0) * mask


def test_heatmap_follows_the_evidence():
    # a hand-built model whose logit is the mean of the right half: Grad-CAM must light it, not the left
    m = CXRFindingModel(arch="small", findings=("f",), image_size=32)
    m.trunk = torch.nn.Sequential(torch.nn.Identity(), _RightHalf())
    m.head = torch.nn.Linear(1, 1)
    with torch.no_grad():
        m.head.weight.fill_(1.0)
    img = np.random.default_rng(0).integers(50, 200, (32, 32), dtype=np.uint8)
    h = grad_cam(m, img, "f")
    assert h[:, :15].max() < 0.05 and h[:, 17:].mean() > 0.3


def test_target_layer_is_fine_enough():
    m = CXRFindingModel(arch="resnet18n_eq", findings=("f",), image_size=224)
    layer, side = target_layer(m, return_side=True)
    assert side == 14 and layer in (m.trunk, m.trunk[-1])  # the last stage's output, 14 x 14
    small = CXRFindingModel(arch="small", findings=("f",), image_size=224)
    assert target_layer(small, return_side=True)[1] == 14  # not the last 7 x 7 block


def test_lung_heat_fraction_on_a_synthetic_film():
    # the hand-built model's heat is the right half: about half of it falls on the right lung's side
    from imaging.lungs import synthetic_film

    m = CXRFindingModel(arch="small", findings=("f",), image_size=96)
    m.trunk = torch.nn.Sequential(torch.nn.Identity(), _RightHalf())
    m.head = torch.nn.Linear(1, 1)
    films = np.stack([synthetic_film(96, seed=s, marker=True) for s in range(3)])
    r = lung_heat_fraction(m, films, "f", labels=[1, 0, 1])
    assert r["n"] == 3 and r["template_masks"] == 0
    assert 0.1 < r["lung_mean"] < 0.6 and r["marker_mean"] == 0.0  # the marker sits on the cold left side


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


def test_focused_model_maps_heat_back_onto_the_film():
    # a lung-focused model sees the thoracic box; its heat (the right half of what it sees) must
    # come back as the right half of the box on the film, zero elsewhere. The chest sits in the
    # top-left of the frame, so the film's own right half is elsewhere.
    from imaging.lungs import synthetic_film, thoracic_box

    film = np.pad(synthetic_film(96, seed=2), ((0, 32), (0, 32)), constant_values=13)
    m = CXRFindingModel(arch="small", findings=("f",), image_size=128, focus="crop")
    m.trunk = torch.nn.Sequential(torch.nn.Identity(), _RightHalf())
    m.head = torch.nn.Linear(1, 1)
    with torch.no_grad():
        m.head.weight.fill_(1.0)
    top, bottom, left, right = thoracic_box(film)
    mid = (left + right) // 2
    h = grad_cam(m, film, "f")
    assert h.shape == film.shape
    inside = np.zeros(film.shape, bool)
    inside[top:bottom, left:right] = True
    assert h[~inside].max() == 0.0
    assert h[top:bottom, left:mid - 2].max() < 0.05 and h[top + 2:bottom - 2, mid + 2:right - 2].mean() > 0.3
    r = lung_heat_fraction(m, film[None], "f")
    assert 0.15 < r["lung_mean"] < 0.7  # heat on the right half of the box: about one lung's worth
