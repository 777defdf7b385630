import itertools
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from mmf_rec.metrics import log_loss, roc_auc


def random_scores_with_ties(seed, n=2000, levels=40):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    # Few distinct values, so ties span both classes; shifted by label so
    # the AUC is far from 0.5 and a wrong tie rule shows.
    scores = rng.integers(0, levels, n).astype(np.float32) / 4 + labels
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    scores, labels = random_scores_with_ties(seed)
    assert len(np.unique(scores)) < len(scores) / 10
    want = sk.roc_auc_score(labels, scores)
    assert roc_auc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        want, abs=1e-12
    )
    assert roc_auc(scores, labels) == pytest.approx(want, abs=1e-12)


def test_auc_accepts_column_tensors_and_extremes():
    labels = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    assert roc_auc(torch.tensor([[0.1], [0.2], [0.3], [0.4]]), labels) == 1.0
    assert roc_auc(torch.tensor([[0.4], [0.3], [0.2], [0.1]]), labels) == 0.0
    assert roc_auc(torch.zeros(4, 1), labels) == 0.5


def test_auc_matches_pairwise_counting_with_bool_labels():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_auc_single_class_warns_and_returns_nan():
    with pytest.warns(RuntimeWarning, match="only one class"):
        value = roc_auc([0.1, 0.5, 0.9], [1, 1, 1])
    assert math.isnan(value)
    with pytest.warns(RuntimeWarning, match="only one class"):
        assert math.isnan(roc_auc(np.arange(4.0), np.zeros(4)))
    # an empty slice (e.g. a generated split with no rows) is undefined too
    with pytest.warns(RuntimeWarning, match="no samples"):
        assert math.isnan(roc_auc([], []))


def test_auc_is_the_one_the_generator_uses_and_needs_neither_torch_nor_mmf():
    import subprocess
    import sys

    from mmf_rec import auc, metrics
    from mmf_rec.data import synthetic

    assert metrics.roc_auc is auc.roc_auc is synthetic.roc_auc
    code = ("import sys, mmf_rec.auc, mmf_rec.data.synthetic; "
            "print(sorted(m for m in ('torch', 'mmf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0.1, float("nan")], [0, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, 5000)
    logits[:50] = 0.0  # ties, and p = 0.5 exactly
    labels = (rng.random(5000) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    want = sk.log_loss(labels, 1 / (1 + np.exp(-logits)))
    assert log_loss(torch.from_numpy(logits), torch.from_numpy(labels)) == pytest.approx(
        want, rel=1e-9
    )


def test_log_loss_stays_finite_where_probabilities_round_to_one():
    # sigmoid(40) == 1.0 in float32 and float64; the exact loss is 40.
    assert log_loss(torch.tensor([40.0]), torch.tensor([0.0])) == pytest.approx(40.0)
    assert log_loss(torch.tensor([-40.0]), torch.tensor([0.0])) == pytest.approx(
        math.exp(-40.0), rel=1e-6
    )


def test_log_loss_eps_clips_like_sklearn():
    eps = 1e-7
    logits = np.array([40.0, -40.0, 0.3])
    labels = np.array([0.0, 0.0, 1.0])
    probs = np.clip(1 / (1 + np.exp(-logits)), eps, 1 - eps)
    want = float(np.mean(-(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))))
    assert log_loss(logits, labels, eps=eps) == pytest.approx(want, rel=1e-9)
    assert log_loss(logits, labels, eps=eps) < log_loss(logits, labels)


def test_log_loss_rejects_bad_input():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        log_loss([0.0], [2.0])
    with pytest.raises(ValueError, match="eps"):
        log_loss([0.0], [1.0], eps=0.7)
    with pytest.raises(ValueError, match="no samples"):
        log_loss([], [])


# -- through MMF --------------------------------------------------------------------
def ctr_batch(seed=0, n=500):
    from mmf.common.sample import SampleList

    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 1)).astype(np.float32)
    targets = (rng.random((n, 1)) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    sample_list = SampleList({"targets": torch.from_numpy(targets)})
    sample_list.dataset_name, sample_list.dataset_type = "synthetic", "val"
    return sample_list, {"scores": torch.from_numpy(logits)}, logits.ravel(), targets.ravel()


def test_registered_metrics_compute_whole_set_values_from_logits():
    from mmf.common.registry import registry

    sample_list, output, logits, targets = ctr_batch()
    auc = registry.get_metric_class("auc")()
    loss = registry.get_metric_class("log_loss")()
    assert auc.required_params == ["scores", "targets"]
    got_auc, got_loss = auc(sample_list, output), loss(sample_list, output)
    assert got_auc.dtype == torch.float32 and got_loss.dtype == torch.float32
    assert float(got_auc) == pytest.approx(sk.roc_auc_score(targets, logits), abs=1e-6)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    assert float(got_loss) == pytest.approx(sk.log_loss(targets, probs), rel=1e-6)


def test_mmf_metrics_wrapper_reports_them_by_name():
    from mmf.modules.metrics import Metrics

    sample_list, output, logits, targets = ctr_batch(1)
    values = Metrics(["auc", "log_loss"])(sample_list, output)
    assert set(values) == {"val/synthetic/auc", "val/synthetic/log_loss"}
    assert float(values["val/synthetic/auc"]) == pytest.approx(
        sk.roc_auc_score(targets, logits), abs=1e-6
    )


def test_registered_metric_rejects_two_scores_per_sample():
    from mmf.common.registry import registry

    sample_list, output, _, _ = ctr_batch()
    output["scores"] = torch.cat([output["scores"], -output["scores"]], 1)
    with pytest.raises(ValueError, match=r"one logit per target.*\(500, 2\)"):
        registry.get_metric_class("auc")()(sample_list, output)


def test_auc_reads_bfloat16_scores_as_mixed_precision_runs_give_them():
    import torch

    from mmf_rec.auc import roc_auc

    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.bfloat16)
    labels = torch.tensor([0, 0, 1, 1])
    assert roc_auc(scores, labels) == 0.75
    assert roc_auc(scores, labels.bool()) == 0.75
