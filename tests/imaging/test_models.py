import json

import numpy as np
import pytest
import torch

from ehr.artefacts import ModelFormatError
from ehr.schema import CXR_FINDINGS
from imaging.estimator import CXRFindingClassifier
from imaging.models import CXRFindingModel


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)


def test_default_findings_and_output_order(images):
    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", image_size=32)
    assert m.findings == CXR_FINDINGS
    df = m.predict_findings(images)
    assert list(df.columns) == list(CXR_FINDINGS) and df.shape == (3, 4)
    assert ((df.to_numpy() > 0) & (df.to_numpy() < 1)).all()
    # column k of the frame is output unit k of the head
    z = m.predict_logits(images)
    assert np.allclose(df.to_numpy(), 1 / (1 + np.exp(-z)), atol=1e-6)


@pytest.mark.parametrize("arch, dim", [("densenet121", 1024), ("resnet18", 512), ("resnet34", 512),
                                       ("small", 128)])
def test_feature_dims_and_one_channel_first_layer(arch, dim, images):
    m = CXRFindingModel(arch=arch, findings=("effusion", "edema"), image_size=32)
    # grayscale in: the first convolution of every backbone takes one channel, not a replicated image
    first = next(mod for mod in m.trunk.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == 1
    assert m.feature_dim == dim
    assert m.features(images).shape == (3, dim)
    assert m.predict_logits(images).shape == (3, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown arch"):
        CXRFindingModel(arch="vgg11")
    with pytest.raises(ValueError, match="unique"):
        CXRFindingModel(arch="small", findings=("a", "a"))


def test_save_load_roundtrip(tmp_path, images):
    torch.manual_seed(1)
    m = CXRFindingModel(arch="small", findings=("effusion", "edema"), image_size=32)
    m.temperatures.copy_(torch.tensor([2.0, 0.5]))
    m.metrics = {"validation": {"mean_auroc": 0.9}}
    d = m.save(tmp_path / "m")
    meta = json.loads((d / "model.json").read_text())
    assert meta["kind"] == "imaging" and meta["format_version"] == CXRFindingClassifier.format_version
    assert meta["state"]["temperatures"] == [2.0, 0.5] and set(meta["files"]) == {"model.safetensors"}
    back = CXRFindingModel.load(d)
    assert back.findings == ("effusion", "edema") and back.image_size == 32 and back.arch == "small"
    assert back.metrics["validation"]["mean_auroc"] == 0.9
    np.testing.assert_array_equal(back.predict_proba(images), m.predict_proba(images))
    assert torch.equal(back.temperatures, torch.tensor([2.0, 0.5]))
    # the weights are checked before torch reads them, and the kind before anything
    meta["kind"] = "gbdt"
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="kind is 'gbdt', expected 'imaging'"):
        CXRFindingModel.load(d)


def test_weights_file_state_dict_and_safetensors(tmp_path, images):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for f in ("w.pt", "w.safetensors"):
        other = CXRFindingModel(arch="small", findings=("effusion",), image_size=32, weights=tmp_path / f)
        np.testing.assert_allclose(other.predict_logits(images), m.predict_logits(images), rtol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        CXRFindingModel(arch="small", findings=("a", "b"), image_size=32, weights=tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        CXRFindingModel(arch="small", image_size=32, weights=tmp_path / "missing.pt")


def test_predict_keeps_training_mode(images):
    m = CXRFindingModel(arch="small", findings=("x",), image_size=32)
    m.train()
    m.predict_findings(images)
    assert m.training


def test_lung_focus_is_part_of_the_model(tmp_path):
    # focus="crop" is applied inside the model (same crop at every call), stored in model.json
    # and restored from it; a model without focus sees the whole film
    from imaging.lungs import focus_crop, synthetic_film

    films = np.stack([np.pad(synthetic_film(48, seed=s), ((0, 16), (0, 16)), constant_values=13) for s in range(3)])
    with pytest.raises(ValueError, match="focus"):
        CXRFindingModel(arch="small", image_size=64, focus="lungs")
    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", findings=("pneumonia",), image_size=64, focus="crop")
    x, boxes = m.focus_images(films)
    assert x.shape == (3, 1, 64, 64) and boxes[0] == focus_crop(films[0])[1]
    assert np.array_equal(m.focus_uint8(films)[1], focus_crop(films[1])[0])
    p = m.predict_proba(films)
    assert np.array_equal(p, m.predict_proba(films))  # deterministic
    # the logits are the network's on the crops, not on the films
    z_crops = m.predict_logits(m.focus_uint8(films), focused=True)
    assert np.allclose(m.predict_logits(films), z_crops, rtol=0, atol=1e-6)
    assert not np.allclose(m.predict_logits(films, focused=True), z_crops, rtol=0, atol=1e-5)
    d = m.save(tmp_path / "m")
    assert json.loads((d / "model.json").read_text())["config"]["focus"] == "crop"
    back = CXRFindingModel.load(d)
    assert back.focus == "crop"
    np.testing.assert_array_equal(back.predict_proba(films), p)
    plain = CXRFindingModel(arch="small", findings=("pneumonia",), image_size=64)
    assert plain.focus is None and plain.focus_images(films)[1] == [(0, 64, 0, 64)] * 3
    assert CXRFindingModel.load(plain.save(tmp_path / "p")).focus is None
