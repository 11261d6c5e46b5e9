import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from imaging.datasets import ImageSet
from imaging.evaluate import evaluate_model, stored_thresholds
from imaging.models import CXRFindingModel
from evaluation.calibration import correct_for_class_weight
from imaging.operating_points import class_pos_weight, threshold_for_sensitivity
from imaging.train import FindingTrainer


def test_prior_shift_correction_by_hand():
    # 300 positives, 100 negatives: pos_weight = 1/3. A constant-logit model trained with weighted BCE
    # converges to p_w = w*300 / (w*300 + 100) = 0.5; the corrected logit must give the prevalence 0.75.
    n_pos, n_neg = 300, 100
    w = n_neg / n_pos
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]

    def weighted_bce(z):
        return float(np.mean(-(w * y * np.log(expit(z)) + (1 - y) * np.log(1 - expit(z)))))

    z_w = minimize_scalar(weighted_bce, bounds=(-10, 10), method="bounded", options={"xatol": 1e-9}).x
    assert expit(z_w) == pytest.approx(0.5, abs=1e-6)
    offset = float(correct_for_class_weight(0.0, class_pos_weight(y)[0]))
    assert offset == pytest.approx(np.log(3.0))
    assert expit(z_w + offset) == pytest.approx(0.75, abs=1e-6)
    # the same for any true probability q: logit(p_w) + offset = logit(q)
    q = np.array([0.1, 0.5, 0.9])
    p_w = w * q / (w * q + 1 - q)
    np.testing.assert_allclose(logit(p_w) + offset, logit(q), atol=1e-12)
    np.testing.assert_allclose(class_pos_weight(np.c_[y, np.zeros_like(y)]), [1 / 3, 1.0])


def test_threshold_for_sensitivity():
    p = np.array([0.05, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    assert threshold_for_sensitivity(p, y, 1.0) == 0.2
    assert threshold_for_sensitivity(p, y, 0.8) == 0.4  # 4 of 5 positives at or above 0.4
    assert threshold_for_sensitivity(p, y, 0.79) == 0.4
    assert threshold_for_sensitivity(p, y, 0.6) == 0.7
    for t in (0.5, 0.8, 0.95):
        thr = threshold_for_sensitivity(p, y, t)
        assert (p[y == 1] >= thr).mean() >= t
    with pytest.raises(ValueError, match="no positives"):
        threshold_for_sensitivity(p, np.zeros(8), 0.9)


def test_threshold_stored_and_applied(effusion_images, tmp_path):
    imgs, y = effusion_images
    full = ImageSet(imgs, y, ("effusion",), np.arange(len(y)))
    train, val = full.subset(np.arange(56)), full.subset(np.arange(56, 80))
    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    tr = FindingTrainer(epochs=2, batch_size=16, lr=3e-3, device="cpu", target_sensitivity=0.9,
                        label_smoothing=0.1, ema_decay=0.9, schedule="cosine", augmentation="shift").fit(m, train, val)
    op = m.metrics["operating_points"]["effusion"]
    probs = m.predict_proba(val.images)[:, 0]
    assert op["threshold"] == pytest.approx(threshold_for_sensitivity(probs, val.labels[:, 0], 0.9), abs=1e-6)
    assert op["target_sensitivity"] == 0.9 and tr.thresholds_[0] == pytest.approx(op["threshold"])
    assert tr.val_metrics_["effusion"]["sensitivity"] >= 0.9
    m.save(tmp_path / "m")
    back = CXRFindingModel.load(tmp_path / "m")
    assert stored_thresholds(back)[0] == pytest.approx(op["threshold"])
    r = evaluate_model(back, val.images, val.labels, n_boot=20)["effusion"]
    assert r["threshold"] == pytest.approx(op["threshold"]) and r["sensitivity"] >= 0.9
    pred = probs >= op["threshold"]
    assert r["specificity"] == pytest.approx((~pred[val.labels[:, 0] == 0]).mean())


def test_class_weighting_is_undone_in_the_head_bias(effusion_images):
    imgs, y = effusion_images
    keep = np.r_[np.flatnonzero(y[:, 0] == 1), np.flatnonzero(y[:, 0] == 0)[:20]]  # 40 positive, 20 negative
    data = ImageSet(imgs[keep], y[keep], ("effusion",), np.arange(len(keep)))
    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    kw = dict(epochs=1, batch_size=20, device="cpu", augment=False)
    tr = FindingTrainer(**kw).fit(m, data, data)
    assert tr.logit_offsets_[0] == pytest.approx(np.log(2.0))  # -log(20 / 40)
    assert m.metrics["logit_offsets"] == pytest.approx([np.log(2.0)])
    assert FindingTrainer(class_weighted=False, **kw).fit(m, data, data).logit_offsets_[0] == 0.0
