import numpy as np
import pytest

from imaging.lungs import heat_fraction_inside, lung_mask, marker_mask, mask_markers, synthetic_film, template_lungs


def test_lung_mask_on_a_synthetic_film():
    film = synthetic_film(96, seed=1)
    m, how = lung_mask(film, return_method=True)
    assert how == "segmented"
    assert m[48, 28] and m[48, 68]  # both lung centres
    assert not m[48, 48]  # mediastinum
    assert not m[2, 2] and not m[90, 48]  # outside air, abdomen
    # the mask covers the drawn lungs (ellipses 0.15 x 0.27 of the side) without spilling far
    yy, xx = np.mgrid[0:96, 0:96] / 96
    truth = np.zeros((96, 96), bool)
    for cx in (0.29, 0.71):
        truth |= ((xx - cx) / 0.15) ** 2 + ((yy - 0.5) / 0.27) ** 2 <= 1
    inter = (m & truth).sum()
    assert inter / truth.sum() > 0.85 and inter / m.sum() > 0.7


def test_lung_mask_falls_back_to_the_template():
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    m, how = lung_mask(ramp, return_method=True)
    assert how == "template" and m.any() and not m[:, 31:33].any()  # two fields, apart at the midline
    t = template_lungs((64, 64))
    assert np.array_equal(t, t[:, ::-1]) and not t[32, 32] and t[32, 17]


def test_marker_found_and_painted_over():
    film = synthetic_film(96, marker=True)
    mk = marker_mask(film)
    assert mk[9:16, 4:10].mean() > 0.5  # the "R"
    assert not mk[30:70, 20:76].any()  # nothing inside the chest
    clean = mask_markers(film)
    assert clean.dtype == film.dtype and clean.shape == film.shape
    assert clean[9:16, 4:10].max() < 100 and film[9:16, 4:10].max() == 255
    assert np.array_equal(clean[~mk], film[~mk])  # nothing else changes
    assert not marker_mask(synthetic_film(96)).any()  # no marker, nothing found


def test_heat_fraction_inside_by_hand():
    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 3.0, 1.0
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert heat_fraction_inside(heat, mask) == pytest.approx(0.75)
    assert np.isnan(heat_fraction_inside(np.zeros((4, 4)), mask))


def test_bad_shape():
    with pytest.raises(ValueError, match="2-D"):
        lung_mask(np.zeros((2, 8, 8), np.uint8))
