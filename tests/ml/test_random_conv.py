"""The random-convolution features and the closed-form ridge head (``ml.random_conv``)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifierCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.random_conv import N_KERNELS, RIDGE_ALPHAS, RandomConvFeatures, RidgeHead, dilations_for


def test_dilations_span_the_series():
    d = dilations_for(251)
    assert d[0] == 1 and d == sorted(set(d))
    assert (9 - 1) * d[-1] <= 250 < (9 - 1) * (2 * d[-1])
    assert dilations_for(5) == [1]  # shorter than one kernel: dilation 1 only


def test_features_of_a_series_do_not_depend_on_the_padding_beside_it():
    rng = np.random.default_rng(0)
    long_ = torch.from_numpy(rng.normal(size=(1, 120, 2)).astype(np.float32))
    short = torch.from_numpy(rng.normal(size=(1, 70, 2)).astype(np.float32))
    f = RandomConvFeatures(2, dilations_for(120), 2000, seed=1)
    f.fit(torch.cat([long_, torch.nn.functional.pad(short, (0, 0, 0, 50))]),
          torch.tensor([[True] * 120, [True] * 70 + [False] * 50]), seed=1)
    assert f.biases.abs().sum() > 0
    alone = f(short, torch.ones(1, 70, dtype=torch.bool))
    batch = torch.cat([long_, torch.nn.functional.pad(short, (0, 0, 0, 50))])
    together = f(batch, torch.tensor([[True] * 120, [True] * 70 + [False] * 50]))
    assert together.shape == (2, f.n_features) and f.n_features % N_KERNELS == 0
    assert torch.allclose(together[1], alone[0], atol=1e-6)
    assert ((together >= 0) & (together <= 1)).all()


def test_ridge_head_matches_scikit_learns_ridge_classifier_cv():
    rng = np.random.default_rng(3)
    n, k = 60, 3
    y = rng.integers(k, size=n)
    x = rng.normal(size=(n, 400)) + np.eye(k)[y] @ rng.normal(size=(k, 400)) * 0.3
    ref = make_pipeline(StandardScaler(with_mean=False), RidgeClassifierCV(alphas=RIDGE_ALPHAS)).fit(x, y)
    targets = -torch.ones(n, k)
    targets[torch.arange(n), torch.from_numpy(y)] = 1
    head = RidgeHead(400, k)
    head.fit(torch.from_numpy(x).float(), targets)
    assert head.alpha == pytest.approx(ref[-1].alpha_)
    x_new = rng.normal(size=(40, 400)) + np.eye(k)[rng.integers(k, size=40)] @ rng.normal(size=(k, 400)) * 0.3
    ours = head(torch.from_numpy(x_new).float()).numpy()
    theirs = ref.decision_function(x_new)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)
