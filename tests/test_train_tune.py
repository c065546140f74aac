"""The LoRA strength search of rf-train tune, on KL curves known in advance."""

import pytest

from rfsdk.calibration import DetectionMetrics
from rfsdk.errors import ConversionError
from rfsdk.train.calibrate import Calibration
from rfsdk.train.strength_profiles import PROFILES
from rfsdk.train.tune import ProfileTuning, best_profile, choose_strength, chosen


def test_bisection_finds_the_largest_strength_within_budget():
    tried = choose_strength(lambda s: 0.08 * s**2, 0.02, steps=5)
    assert [t.strength for t in tried] == [1.0, 0.5, 0.75, 0.625, 0.5625, 0.53125]
    assert chosen(tried, 0.02).strength == 0.5


def test_full_strength_within_budget_is_measured_once():
    tried = choose_strength(lambda s: 0.01 * s, 0.02)
    assert [t.strength for t in tried] == [1.0] and chosen(tried, 0.02).strength == 1.0


def test_a_budget_no_strength_meets_is_a_clear_error():
    with pytest.raises(ConversionError, match=r"over --max-kl 0\.001.*higher --benign-kl-weight"):
        choose_strength(lambda s: 0.5 + s, 0.001, steps=3)


def _tuned(name: str, tpr: float, roc_auc: float) -> ProfileTuning:
    metrics = DetectionMetrics(threshold=0.5, tpr=tpr, fpr=0.05, precision=0.9, f1=0.8, roc_auc=roc_auc, n_harmful=10, n_benign=20)
    calibration = Calibration(threshold=0.5, target_fpr=0.05, validation=metrics, edgy_fpr=0.0, n_harmful=10, n_benign=20)
    return ProfileTuning(profile=PROFILES[name], strength=0.5, kl_nats_per_token=0.01, tried=[], calibration=calibration)


def test_the_best_profile_has_the_highest_tpr_then_roc_auc_then_comes_first():
    assert best_profile([_tuned("uniform", 0.8, 0.95), _tuned("late-mlp", 0.85, 0.9)]).profile.name == "late-mlp"
    assert best_profile([_tuned("uniform", 0.8, 0.95), _tuned("late-mlp", 0.8, 0.9)]).profile.name == "uniform"
    assert best_profile([_tuned("late-mlp", 0.8, 0.9), _tuned("uniform", 0.8, 0.9)]).profile.name == "late-mlp"
