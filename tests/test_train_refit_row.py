"""The <rf> row re-fit: its objective on constructed features (the command runs end to end in test_train_fit)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rfsdk.calibration import roc_auc  # noqa: E402
from rfsdk.train.refit_row import ReplyFeatures, fit_row, soft_max_per_reply  # noqa: E402


def _replies(rng: np.random.Generator, n: int, lengths: list[int], marked: bool) -> ReplyFeatures:
    """Noise replies of 8-dim states (the last dimension constant, as a bias); a marked reply carries +3 on
    dimension 0 at its start and at one later position."""
    start_h = rng.normal(size=(n, 8))
    reply_h = [rng.normal(size=(length, 8)) for length in lengths]
    for states in [start_h, *reply_h]:
        states[:, 7] = 1.0
    if marked:
        start_h[:, 0] += 3.0
        for states in reply_h:
            if len(states):
                states[rng.integers(len(states)), 0] += 3.0
    return ReplyFeatures(
        start_h=start_h, start_z=np.zeros(n),
        reply_h=np.concatenate(reply_h), reply_z=np.zeros(sum(lengths)),
        reply_of=np.concatenate([np.full(length, i) for i, length in enumerate(lengths)]),
    )


def _peak(f: ReplyFeatures, w: np.ndarray) -> np.ndarray:
    scores = f.reply_h @ w - f.reply_z
    return np.array([scores[f.reply_of == i].max() for i in np.unique(f.reply_of)])


def test_the_fitted_row_flags_the_marked_position_anywhere_in_a_reply():
    rng = np.random.default_rng(0)
    lengths = [int(k) for k in rng.integers(5, 30, size=60)]
    harmful = _replies(rng, 61, lengths + [0], marked=True)  # the last one has no answer tokens: start only
    benign = [_replies(rng, 60, lengths, marked=False), _replies(rng, 40, lengths[:40], marked=False)]
    row = np.zeros(8)
    fitted = fit_row(row, harmful, benign, pull=1e-3)
    assert np.isfinite(fitted).all()
    assert fitted[0] > 2 * np.abs(fitted[1:7]).max()  # it found the marking direction
    assert roc_auc(_peak(harmful, fitted), np.concatenate([_peak(f, fitted) for f in benign])) > 0.9
    assert (_peak(harmful, fitted) > 0).mean() > 0.8  # P(<rf>) above 1/2 somewhere in most harmful replies
    assert all((_peak(f, fitted) > 0).mean() < 0.4 for f in benign)  # and in few benign ones
    held = fit_row(row, harmful, benign, pull=1e6)
    assert np.abs(held - row).max() < 1e-3  # a strong pull keeps the trained row


def test_soft_max_per_reply_lies_between_the_max_and_the_max_plus_log_length():
    logits = torch.tensor([1.0, 5.0, 2.0, -3.0, 0.0], dtype=torch.float64)
    reply_of = torch.tensor([0, 0, 0, 2, 2])
    pooled = soft_max_per_reply(logits, reply_of, 3)
    assert 5.0 <= pooled[0] <= 5.0 + np.log(3) and 0.0 <= pooled[2] <= np.log(2)
    assert pooled[1] < -1e3  # a reply with no positions
