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


def _consolidated_film():
    """The synthetic film with its left-image lung filled (bright) below 40 % of the height."""
    film = synthetic_film(96, seed=1).astype(float)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    lung = ((xx - 0.29) / 0.15) ** 2 + ((yy - 0.5) / 0.27) ** 2 <= 1
    film[lung & (yy > 0.4)] = 0.7 * 255
    return film.astype(np.uint8)


def test_mirror_completion_recovers_a_consolidated_lung():
    film = _consolidated_film()
    plain, how = lung_mask(film, return_method=True, mirror=False)
    full = lung_mask(film)
    assert how == "segmented"
    assert not plain[60, 28] and full[60, 28]  # the consolidated part is lung again
    assert full[60, 68] and not full[48, 48]  # the other lung kept, the mediastinum still out
    assert np.array_equal(lung_mask(synthetic_film(96, seed=1)),  # two healthy lungs: nothing mirrored
                          lung_mask(synthetic_film(96, seed=1), mirror=False))


def test_focus_crop_is_deterministic_and_contains_the_lungs():
    from imaging.lungs import focus_crop, thoracic_box

    # an off-centre film: the chest in the top-left of a larger dark frame
    film = np.pad(synthetic_film(96, seed=2), ((0, 32), (0, 32)), constant_values=13)
    crop, box = focus_crop(film)
    again, box2 = focus_crop(film.copy())
    assert crop.shape == film.shape and crop.dtype == np.uint8
    assert box == box2 and np.array_equal(crop, again)
    top, bottom, left, right = box
    assert box == thoracic_box(film)
    assert top < 48 < bottom <= 100 and left < 28 and 68 < right <= 100  # both lungs, not the padding
    assert focus_crop(film, 64)[0].shape == (64, 64)
    with pytest.raises(ValueError, match="uint8"):
        focus_crop(film.astype(np.float32))


def test_paste_back_inverts_the_crop():
    from imaging.lungs import crop_to_box, paste_back

    film = (np.add.outer(np.arange(120), 2 * np.arange(100)) % 256).astype(np.uint8)  # a position code
    box = (10, 90, 25, 85)
    crop = crop_to_box(film, box, 64)
    back = paste_back(crop.astype(np.float32), box, film.shape)
    inside = np.zeros(film.shape, bool)
    inside[10:90, 25:85] = True
    assert back.shape == film.shape and not back[~inside].any()
    # the map returns to where it came from (a transposed or shifted placement fails this)
    err = np.abs(back[12:88, 27:83] - film[12:88, 27:83].astype(np.float32))
    assert np.median(err) < 3.0
