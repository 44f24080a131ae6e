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


def test_leave_one_out_predictions_are_those_of_the_fit_without_the_row():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 50))
    y = np.stack([x[:, 0] - x[:, 1], x[:, 2]], axis=1) + 0.1 * rng.normal(size=(30, 2))
    head = RidgeHead(50, 2)
    head.fit(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    xs = x / x.std(0)  # the head scales by the std of all rows, the held-out one included
    for row in (0, 7, 29):
        rest = np.arange(30) != row
        alone = Ridge(alpha=head.alpha).fit(xs[rest], y[rest]).predict(xs[row : row + 1])[0]
        np.testing.assert_allclose(head.loo_predictions[row].numpy(), alone, rtol=1e-3, atol=1e-3)


def _trainer_with_a_fitted_ridge_head():
    from ml.config import TrainConfig
    from ml.continual.trainer import Trainer
    from ml.data import SeriesData
    from ml.examples import build_examples
    from ml.model import ModelConfig, TimeSeriesTransformer
    from ml.normalization import Normalization
    from ml.training_run import _fit_random_features
    from tests.ml.conftest import TINY_MODEL, sine_classes

    X, y = sine_classes(10, t=40)
    data = SeriesData(ref="synthetic", series=X, ids=[str(i) for i in range(len(X))], labels=y)
    mcfg = ModelConfig.from_dict({**TINY_MODEL, "n_channels": 2, "n_classes": 3, "random_features": 840,
                                  "random_dilations": dilations_for(40)})
    trainer = Trainer(TimeSeriesTransformer(mcfg), "classification", TrainConfig(log_every=0),
                      norm=Normalization.fit(X), label_index={"c0": 0, "c1": 1, "c2": 2})
    examples = build_examples(data, "classification")
    _fit_random_features(trainer, examples, refit_biases=True, seed=0)
    return trainer, examples[::2], examples[1::2]


def test_training_adds_to_the_ridge_heads_leave_one_out_outputs():
    trainer, train, _ = _trainer_with_a_fitted_ridge_head()
    model = trainer.model
    assert bool(model.ridge_classifier.fitted) and float(model.ridge_scale.detach()) > 1  # calibrated up from +-1 targets
    inputs, _ = trainer.batch(train)
    in_sample = model.ridge_classifier(inputs["random_features"])
    assert not torch.allclose(inputs["ridge_out"], in_sample)  # the fit's own outputs would flatter it
    loo = model.ridge_classifier.loo_predictions
    assert torch.allclose(inputs["ridge_out"], loo[0::2][: len(train)])


def test_the_transformer_heads_share_is_chosen_on_validation():
    from ml.training_run import _weigh_transformer_head

    trainer, _, val = _trainer_with_a_fitted_ridge_head()
    head = trainer.model.classifier.linear
    assert _weigh_transformer_head(trainer, val) == 1.0  # a zero head changes nothing: a tie keeps it
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.random.default_rng(0).normal(0, 50, size=head.weight.shape)))
    assert _weigh_transformer_head(trainer, val) == 0.0  # a head of noise is dropped...
    assert head.weight.abs().sum() == 0  # ...by folding the weight 0 into it
