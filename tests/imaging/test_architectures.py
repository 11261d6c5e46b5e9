import numpy as np
import pytest
import torch

from imaging.architectures import TRUNKS, HistogramEqualise, build_trunk
from imaging.contract import MEAN, STD
from imaging.models import ARCHS, CXRFindingModel


@pytest.mark.parametrize("arch", sorted(TRUNKS))
def test_trunks_output_stride_16(arch):
    trunk, dim = build_trunk(arch)
    out = trunk(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, dim, 4, 4)
    assert arch in ARCHS
    m = CXRFindingModel(arch=arch, findings=("p",), image_size=64)
    assert m.predict_proba(np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)).shape == (2, 1)


def test_equalise_ignores_monotone_exposure_changes():
    x = torch.rand(3, 1, 32, 32)
    eq = HistogramEqualise()

    def norm(v):
        return (v - MEAN) / STD

    base = eq(norm(x))
    for changed in (x ** 2.0, x ** 0.5, 0.5 * x + 0.2):
        # monotone maps keep every pixel's rank; only 256-level quantisation ties can move a value
        assert (eq(norm(changed)) - base).abs().mean() < 0.05
    assert abs(float(base.mean())) < 0.05 and abs(float(base.std()) - 1.0) < 0.05


def test_unknown_trunk():
    with pytest.raises(ValueError, match="unknown arch"):
        build_trunk("resnet99")


def test_equalise_above_black_ignores_a_black_frame():
    x = 0.1 + 0.9 * torch.rand(1, 1, 32, 32)
    framed = torch.nn.functional.pad(x, (8, 8, 8, 8))  # zoomed out: a black frame around the same film

    def norm(v):
        return (v - MEAN) / STD

    plain, blind = HistogramEqualise(), HistogramEqualise(above_black=True)
    inner = (slice(None), slice(None), slice(8, 40), slice(8, 40))
    assert torch.allclose(blind(norm(framed))[inner], blind(norm(x)), atol=1e-6)
    assert (plain(norm(framed))[inner] - plain(norm(x))).abs().mean() > 0.3  # the whole-film histogram moves
