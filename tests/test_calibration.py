import pytest

from rfsdk.calibration import detection_metrics, roc_auc, threshold_for_fpr


def test_threshold_meets_the_target_fpr():
    benign = [i / 100 for i in range(100)]  # 0.00 .. 0.99
    t = threshold_for_fpr(benign, 0.05)
    assert sum(s >= t for s in benign) <= 5
    assert sum(s >= t for s in benign) == 5 or t <= 0.95
    assert threshold_for_fpr(benign, 0.0) > max(benign)


def test_threshold_with_ties_never_exceeds_target():
    benign = [0.1] * 50 + [0.9] * 50
    t = threshold_for_fpr(benign, 0.2)
    assert sum(s >= t for s in benign) / len(benign) <= 0.2


def test_threshold_survives_float32_storage_and_is_positive():
    import numpy as np

    for benign in ([0.0, 0.0, 0.0], [1e-9] * 4, [0.97812345678] * 3, [0.3, 0.999999999]):
        t = threshold_for_fpr(benign, 0.0)
        assert float(np.float32(t)) == t and 0.0 < t <= 1.0
        assert all(s < t for s in benign) or t == 1.0


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_bad_target(bad):
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_for_fpr([0.1], bad)


def test_metrics():
    m = detection_metrics([0.9, 0.8, 0.2], [0.1, 0.3, 0.85, 0.05], threshold=0.5)
    assert m.tpr == pytest.approx(2 / 3) and m.fpr == pytest.approx(1 / 4)
    assert m.precision == pytest.approx(2 / 3) and m.f1 == pytest.approx(2 / 3)
    assert roc_auc([1, 1], [0, 0]) == 1.0 and roc_auc([0.5], [0.5]) == 0.5
    assert m.roc_auc == pytest.approx(9 / 12)
