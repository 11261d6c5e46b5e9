import numpy as np
import pytest
import torch

from imaging.datasets import ImageSet
from imaging.models import CXRFindingModel
from imaging.train import FindingTrainer, augment_batch, classification_metrics


def _sets(effusion_images):
    imgs, y = effusion_images
    full = ImageSet(imgs, y, ("effusion",), np.arange(len(y)))
    return full.subset(np.arange(60)), full.subset(np.arange(60, 80))


def test_augment_shape_range_and_no_flip_by_default():
    x = torch.rand(4, 1, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # a left-bright image stays left-bright (no flip), for every draw
    left = torch.zeros(8, 1, 32, 32)
    left[..., :12] = 1.0
    left[..., 12:] = 0.2
    a = augment_batch(left, torch.Generator().manual_seed(1))
    assert (a[..., :8].mean(dim=(1, 2, 3)) > a[..., -8:].mean(dim=(1, 2, 3))).all()
    flipped = augment_batch(left, torch.Generator().manual_seed(1), horizontal_flip=True)
    assert (flipped[..., :8].mean(dim=(1, 2, 3)) < flipped[..., -8:].mean(dim=(1, 2, 3))).any()


def test_classification_metrics_golden():
    p = np.array([[0.9], [0.8], [0.3], [0.6], [0.1]])
    y = np.array([[1], [1], [1], [0], [0]])
    m = classification_metrics(p, y, ("f",))["f"]
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)


def test_two_steps_reduce_loss_on_a_fixed_batch(effusion_images):
    imgs, y = effusion_images
    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    x = torch.from_numpy(imgs[:16]).unsqueeze(1).float() / 255
    t = torch.from_numpy(y[:16])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_trainer_learns_synthetic_effusion_and_calibrates(effusion_images, tmp_path):
    train, val = _sets(effusion_images)
    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    tr = FindingTrainer(epochs=8, batch_size=16, lr=3e-3, patience=8, checkpoint_dir=tmp_path,
                        device="cpu", random_state=0).fit(m, train, val)
    assert len(tr.history_) == 8
    assert tr.best_score_ >= 0.8, tr.history_
    assert tr.val_metrics_["effusion"]["auroc"] == pytest.approx(tr.best_score_)
    assert m.metrics["best_epoch"] == tr.best_epoch_
    assert float(m.temperatures[0]) == pytest.approx(tr.temperatures_[0])
    assert (tmp_path / "checkpoint.pt").is_file()


def test_checkpoint_resume_matches_uninterrupted(effusion_images, tmp_path):
    train, val = _sets(effusion_images)
    kw = dict(batch_size=16, max_steps_per_epoch=2, patience=10, device="cpu", augment=True, random_state=3)

    torch.manual_seed(0)
    full = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    FindingTrainer(epochs=2, **kw).fit(full, train, val)

    torch.manual_seed(0)
    part = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    FindingTrainer(epochs=1, checkpoint_dir=tmp_path, **kw).fit(part, train, val)
    torch.manual_seed(123)  # a fresh process: different init, replaced by the checkpoint
    resumed = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    tr = FindingTrainer(epochs=2, checkpoint_dir=tmp_path, resume=True, **kw).fit(resumed, train, val)
    assert [h["epoch"] for h in tr.history_] == [1, 2]
    np.testing.assert_allclose(resumed.predict_logits(val.images), full.predict_logits(val.images), atol=1e-5)


def test_findings_mismatch_raises(effusion_images):
    train, val = _sets(effusion_images)
    m = CXRFindingModel(arch="small", findings=("edema",), image_size=32)
    with pytest.raises(ValueError, match="differ from model findings"):
        FindingTrainer(epochs=1).fit(m, train, val)


def test_trainer_focuses_a_lung_focused_model_once(monkeypatch):
    # the trainer crops the training and validation films with the model's own focus (the same
    # crop as at inference) and validates on them without cropping twice
    from imaging.lungs import synthetic_film

    films = np.stack([np.pad(synthetic_film(48, seed=s), ((0, 16), (0, 16)), constant_values=13) for s in range(8)])
    y = (np.arange(8) % 2)[:, None].astype(np.float32)
    data = ImageSet(films, y, ("pneumonia",), np.arange(8))
    model = CXRFindingModel(arch="small", findings=("pneumonia",), image_size=64, focus="crop")
    calls = []
    original = CXRFindingModel.focus_images

    def counting(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(CXRFindingModel, "focus_images", counting)
    tr = FindingTrainer(epochs=2, batch_size=4, augment=False).fit(model, data, data)
    assert calls == [8, 8]  # training films once, validation films once, for both epochs
    z = model.predict_logits(films)  # inference crops
    assert len(calls) == 3
    np.testing.assert_allclose(model.predict_logits(model.focus_uint8(films), focused=True), z, atol=1e-5)
    assert len(tr.history_) == 2


def test_lung_penalty_trains_and_needs_shift_augmentation():
    from imaging.lungs import synthetic_film

    films = np.stack([synthetic_film(48, seed=s) for s in range(8)])
    data = ImageSet(films, (np.arange(8) % 2)[:, None].astype(np.float32), ("pneumonia",), np.arange(8))
    model = CXRFindingModel(arch="resnet18n_eq", findings=("pneumonia",), image_size=48)
    tr = FindingTrainer(epochs=1, batch_size=4, augmentation="shift", lung_penalty=1.0).fit(model, data, data)
    assert np.isfinite(tr.history_[0]["train_loss"])
    with pytest.raises(ValueError, match="lung_penalty needs augmentation='shift'"):
        FindingTrainer(epochs=1, lung_penalty=1.0).fit(model, data, data)
