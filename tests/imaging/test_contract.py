import numpy as np
import pytest
import torch
from PIL import Image

from imaging.contract import ImageContractError, check_images, load_image, prepare_images


def _save(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_load_grayscale_png(tmp_path):
    arr = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    out = load_image(_save(tmp_path / "g.png", arr))
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_colour_rgb_is_rejected_naming_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    p = _save(tmp_path / "colour.png", rgb)
    with pytest.raises(ImageContractError, match="colour.png.*colour image"):
        load_image(p)


def test_grey_stored_as_rgb_is_accepted(tmp_path):
    g = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    p = _save(tmp_path / "grey_rgb.png", np.repeat(g[..., None], 3, axis=2))
    assert np.array_equal(load_image(p), g)


def test_corrupt_png_is_rejected(tmp_path):
    p = tmp_path / "corrupt.png"
    good = tmp_path / "good.png"
    _save(good, np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8))
    p.write_bytes(good.read_bytes()[:60])  # truncated file
    with pytest.raises(ImageContractError, match="corrupt.png.*cannot decode"):
        load_image(p)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageContractError, match="text.png"):
        load_image(tmp_path / "text.png")


def test_missing_and_constant_files(tmp_path):
    with pytest.raises(ImageContractError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageContractError, match="constant"):
        load_image(_save(tmp_path / "blank.png", np.zeros((32, 32), np.uint8)))


def test_array_value_range_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(ImageContractError, match="divide raw 0..255"):
        check_images(rng.uniform(0, 255, (2, 32, 32)).astype(np.float32))
    with pytest.raises(ImageContractError, match="negative"):
        check_images(rng.normal(0, 1, (2, 32, 32)).astype(np.float32))
    with pytest.raises(ImageContractError, match="NaN"):
        check_images(np.full((1, 32, 32), np.nan, np.float32))
    with pytest.raises(ImageContractError, match="dtype"):
        check_images(rng.integers(0, 255, (2, 32, 32)).astype(np.int32))


def test_array_channel_errors():
    with pytest.raises(ImageContractError, match="3 channels"):
        check_images(np.random.default_rng(4).random((2, 3, 32, 32), dtype=np.float32))
    with pytest.raises(ImageContractError, match="image 1 is constant"):
        x = np.random.default_rng(5).random((3, 32, 32), dtype=np.float32)
        x[1] = 0.5
        check_images(x)


def test_uint8_scaled_and_resized():
    x = np.random.default_rng(6).integers(0, 256, (3, 50, 40), dtype=np.uint8)
    t = prepare_images(x, 32)
    assert t.shape == (3, 1, 32, 32) and t.dtype == torch.float32
    assert 0 <= float(t.min()) and float(t.max()) <= 1
    same = prepare_images(x[:, :32, :32], 32)
    assert torch.allclose(same[:, 0], torch.from_numpy(x[:, :32, :32]).float() / 255)


def test_prepare_from_paths(tmp_path):
    g = np.random.default_rng(7).integers(0, 256, (40, 40), dtype=np.uint8)
    p = _save(tmp_path / "a.png", g)
    assert prepare_images([p, p], 32).shape == (2, 1, 32, 32)
