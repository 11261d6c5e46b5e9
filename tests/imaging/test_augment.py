import numpy as np
import pytest
import torch

from imaging.augment import SHIFTS, apply_shift, augment_cxr, gaussian_blur


def _left_bright(n=16, s=32):
    x = torch.full((n, 1, s, s), 0.2)
    x[..., : s // 3] = 0.9
    return x


def test_shapes_ranges_and_seeded():
    x = torch.rand(6, 1, 40, 40)
    a = augment_cxr(x, torch.Generator().manual_seed(0))
    b = augment_cxr(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)  # same generator seed, same draw
    assert not torch.equal(a, augment_cxr(x, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("seed", range(5))
def test_never_flips(seed):
    # the bright third stays on the left for every draw: rotations, shifts and zoom are small, and nothing mirrors
    a = augment_cxr(_left_bright(), torch.Generator().manual_seed(seed))
    assert (a[..., :6].mean(dim=(1, 2, 3)) > a[..., -6:].mean(dim=(1, 2, 3)) + 0.2).all()


def test_blur_keeps_a_constant_image_and_smooths_an_edge():
    flat = torch.full((2, 1, 16, 16), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.5, 2.0])), flat, atol=1e-6)
    edge = _left_bright(2, 32)
    out = gaussian_blur(edge, torch.tensor([0.01, 2.0]))
    assert torch.allclose(out[0], edge[0], atol=1e-4)  # a tiny sigma leaves image 0 as it was
    assert 0.25 < float(out[1, 0, 0, 10]) < 0.85  # image 1's edge is smeared


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_shifts_are_deterministic_and_in_range(name):
    x = torch.rand(3, 1, 32, 32)
    a, b = apply_shift(name, x), apply_shift(name, x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.allclose(a, x)


def test_shift_values_and_unknown():
    x = torch.full((1, 1, 8, 8), 0.25)
    x[..., 0, 0] = 0.0
    assert float(apply_shift("gamma_0.5", x)[0, 0, 4, 4]) == pytest.approx(0.5)
    assert float(apply_shift("gamma_2.0", x)[0, 0, 4, 4]) == pytest.approx(0.0625)
    with pytest.raises(KeyError, match="unknown shift"):
        apply_shift("flip", x)


def test_shift_proxies_lie_outside_the_training_gamma_range():
    # training gamma is exp(+-0.3) = 0.74..1.35; the proxies must be held out
    lo, hi = np.exp(-0.3), np.exp(0.3)
    assert not lo <= 0.5 <= hi and not lo <= 2.0 <= hi


def test_masks_move_with_the_images():
    # with the intensity changes off, a mask that equals its image must come out equal to it
    # (same rotation, shift and zoom), and the image's random draws are the same with or without masks
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 8:20, 6:14] = 1.0
    off = dict(contrast=0.0, brightness=0.0, gamma=0.0, blur_p=0.0, noise_p=0.0)
    img, m = augment_cxr(x.clone(), torch.Generator().manual_seed(3), masks=x.clone(), **off)
    assert torch.allclose(img, m, atol=1e-6) and not torch.equal(m, x)
    assert torch.equal(augment_cxr(x.clone(), torch.Generator().manual_seed(3)),
                       augment_cxr(x.clone(), torch.Generator().manual_seed(3), masks=x.clone())[0])
