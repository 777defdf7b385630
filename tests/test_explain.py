"""Captum attributions of a small trained dlrm_mm (mmf_rec/explain/, tools/explain.py).

One tiny run is trained through MMF's own ``mmf_run`` (pretrained, offline
MiniLM and EfficientNet-Lite0 backbones, cached; small d and data), then
loaded back in-process and explained with real Captum, no mocks. The true
click model's answer to compare with is the generator's
(mmf_rec/data/synthetic_truth.py); tools/explain.py runs as a program.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmf_rec.data.synthetic_truth import check_against_truth, synthetic_truth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMF_RUN = os.path.join(os.path.dirname(sys.executable), "mmf_run")

TINY_CONFIG = """
includes:
- {repo}/projects/kbrec/dlrm_mm.yaml
model_config:
  dlrm_mm:
    embedding_dim: 16
    dense_encoder:
      params:
        hidden_dims: [32, 16]
    top_mlp: [64, 32]
    text_encoder:
      params:
        max_length: 24
    image_encoder:
      params:
        image_size: 64
        grid: 2
"""
TINY_ARGS = [
    "dataset_config.kbrec_synthetic.generator.num_users=300",
    "dataset_config.kbrec_synthetic.generator.num_items=150",
    "dataset_config.kbrec_synthetic.generator.num_interactions=20000",
    "training.batch_size=256",
    "training.max_updates=150",
    "training.log_interval=50",
    "training.evaluation_interval=150",
    "training.checkpoint_interval=150",
    "run_type=train_val",
]
GROUPS = ["dense", "user_id", "region", "device", "age_bucket", "history",
          "item_id", "category", "brand", "price_bucket", "text", "image"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    (tmp / "tiny.yaml").write_text(TINY_CONFIG.format(repo=REPO))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMF_")}
    env["MMF_CACHE_DIR"] = str(tmp / "cache")
    result = subprocess.run(
        [MMF_RUN, f"config={tmp / 'tiny.yaml'}", f"env.save_dir={tmp / 'save'}",
         f"env.data_dir={tmp / 'data'}", *TINY_ARGS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])

    from mmf.common.registry import registry

    from mmf_rec.runs import load_run

    previous = registry.get("config", no_warning=True)
    loaded = load_run(tmp / "save", expect_model="dlrm_mm")
    assert loaded.weights == tmp / "save" / "dlrm_mm_final.pth"
    yield loaded
    registry.register("config", previous)


def one_user(run, user=None):
    from mmf_rec.explain import user_sample

    users = np.asarray(run.data.split("test")["user_id"])[:, 0]
    return user_sample(run.data, int(users[0] if user is None else user))


def forward(run, rows):
    """The model's own forward (what mmf_run evaluates) on a batch dict."""
    from mmf.common.sample import SampleList

    sample_list = SampleList(rows)
    sample_list.dataset_name, sample_list.dataset_type = run.dataset_name, "val"
    with torch.no_grad():
        return run.model(sample_list)["scores"].reshape(-1)


def test_loaded_run_reproduces_the_runs_validation_auc(run):
    """The loader rebuilds the trained model: same val AUC as mmf_run reported."""
    from mmf_rec.data.dataset import KBRecDataset
    from mmf_rec.auc import roc_auc

    val = KBRecDataset(run.data, "val", dataset_name=run.data.name, dataset_type="test")
    batch = val.__getitems__(list(range(len(val))))
    scores = forward(run, batch).numpy()
    with open(run.weights.parent / "metrics.json") as f:
        reported = json.load(f)["val"]["auc"]
    assert abs(roc_auc(scores, batch["targets"].reshape(-1).numpy()) - reported) < 1e-4


def test_token_inputs_rebuild_the_models_scores(run):
    """IG runs on the token vectors; the function of them that it
    differentiates is the model's score, not an approximation of it."""
    from mmf_rec.explain.tokens import score_from_tokens, token_inputs

    model = run.model
    sample = one_user(run)
    cold = int(np.flatnonzero(np.asarray(run.data.items["is_cold"][:]))[0])
    items = torch.tensor([0, 5, 77, cold])
    with torch.no_grad():
        expected = model.score_candidates(sample, model.encode_items(items))
        rows = {k: v.repeat_interleave(len(items), 0) for k, v in sample.items()}
        inputs = token_inputs(model, rows, items)
        rebuilt = score_from_tokens(model, tuple(inputs.tensors), inputs.masks,
                                    *inputs.tensors.values())
    assert torch.allclose(rebuilt, expected, atol=1e-5), (rebuilt, expected)
    # the per-item history id vectors average to the model's history bag
    assert set(inputs.tensors) == {"user", "history_ids", "history_text", "history_image",
                                   "item", "text", "image"}


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_completeness_attributions_sum_to_score_minus_baseline(run, baseline):
    from mmf_rec.explain import explain

    sample = one_user(run)
    explanations = explain(run.model, sample, [0, 3, 42, 99, 140], baseline=baseline)
    rows = {k: v.repeat_interleave(5, 0) for k, v in sample.items()}
    rows["item_index"] = torch.tensor([0, 3, 42, 99, 140])
    for e, score in zip(explanations, forward(run, rows).tolist()):
        assert e.baseline == baseline and list(e.groups) == GROUPS
        assert e.score == pytest.approx(score, abs=1e-5)
        gap = e.score - e.baseline_score
        # Captum's delta is exactly what the groups miss of the difference
        assert e.total == pytest.approx(gap + e.delta, abs=1e-4)
        # and the integration error is small
        assert abs(e.delta) < 0.05, (e.delta, gap)
    gaps = np.array([abs(e.score - e.baseline_score) for e in explanations])
    deltas = np.array([abs(e.delta) for e in explanations])
    assert deltas.mean() < 0.03 * gaps.mean(), (deltas, gaps)
    # different items, different explanations
    assert len({round(e.groups["text"], 6) for e in explanations}) == 5


def test_convergence_delta_shrinks_with_more_steps(run):
    """The delta is IG's integration error: more steps, smaller error."""
    from mmf_rec.explain import Explainer

    sample = one_user(run)
    rows = {k: v.repeat_interleave(8, 0) for k, v in sample.items()}
    items = torch.arange(8) * 17
    errors = {}
    for steps in (4, 64):
        _, score, base, delta, _ = Explainer(run.model, run.data, n_steps=steps).attribute(
            rows, items, "mean")
        errors[steps] = float(delta.abs().mean())
    assert errors[64] < 0.5 * errors[4], errors


def test_zero_baseline_is_the_absent_pair(run):
    """The zero baseline scores like a pair with every token absent: the
    model's logit with all groups masked out."""
    from mmf_rec.explain import explain
    from mmf_rec.explain.tokens import score_from_tokens, token_inputs

    model = run.model
    sample = one_user(run)
    e = explain(model, sample, [10])[0]
    inputs = token_inputs(model, sample, torch.tensor([10]))
    masks = {k: torch.zeros_like(v) for k, v in inputs.masks.items()}
    masks["user"], masks["item"] = inputs.masks["user"], inputs.masks["item"]
    zeros = [torch.zeros_like(v) for v in inputs.tensors.values()]
    with torch.no_grad():
        absent = score_from_tokens(model, tuple(inputs.tensors), masks, *zeros)
    assert e.baseline_score == pytest.approx(float(absent), abs=1e-5)


def test_details_add_up_to_their_groups(run):
    from mmf_rec.explain import SPECIAL_TOKENS, explain

    sample = one_user(run)
    item = 21
    e = explain(run.model, sample, [item])[0]
    history = sample["sparse_history"][0]
    # past items: the user's history, most recent first, summing to the group
    assert [i for i, _ in e.history] == [int(i) for i in history if i >= 0]
    assert sum(a for _, a in e.history) == pytest.approx(e.groups["history"], abs=1e-5)
    # words: the description, word pieces joined, summing to the text group
    words = "".join(w for w, _ in e.words if w not in SPECIAL_TOKENS)
    assert words == run.data.descriptions()[item].lower().replace(" ", "")
    assert sum(a for _, a in e.words) == pytest.approx(e.groups["text"], abs=1e-5)
    assert e.top_words(3)[0][0] not in SPECIAL_TOKENS
    # image: a 2x2 grid of regions, summing to the image group
    assert e.regions.shape == (2, 2)
    assert e.regions.sum() == pytest.approx(e.groups["image"], abs=1e-5)
    json.dumps(e.to_dict())  # serialisable


def test_padding_gets_exactly_zero_attribution(run):
    from mmf_rec.explain import explain

    sample = dict(one_user(run))
    history = sample["sparse_history"].clone()
    history[0, 2:] = -1  # a user with two past items
    sample["sparse_history"] = history
    for baseline in ("zero", "mean"):
        e = explain(run.model, sample, [7], baseline=baseline)[0]
        assert len(e.history) == 2
        for name in ("history_ids", "history_text", "history_image"):
            assert np.all(e.tokens[name][2:] == 0.0), (name, e.tokens[name])
            assert np.any(e.tokens[name][:2] != 0.0)
        text_mask = run.model.knowledge["text"].cached_mask[7].numpy()
        assert not text_mask.all()  # the description is shorter than max_length
        assert np.all(e.tokens["text"][~text_mask] == 0.0)


def test_true_click_model_groups(run):
    """The ground truth itself: device carries nothing, and the hidden
    attributes (only in text and image) dominate, as the generator says."""
    truth = synthetic_truth(run.data.manifest["generator"], range(0, 300, 3), range(150))
    assert sorted(truth) == sorted(GROUPS)
    assert truth["device"] == 0.0 and all(v > 0 for g, v in truth.items() if g != "device")
    top = sorted(truth, key=truth.get, reverse=True)[:3]
    assert {"text", "image"} <= set(top), truth


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    from mmf_rec.explain import spearman

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_attributions_rank_groups_like_the_true_click_model(run, baseline):
    """The method is right, not only running: mean |attribution| per group
    follows the known click model, and the ignored group ranks at the bottom."""
    from mmf_rec.explain import global_importance, spearman

    result = global_importance(run.model, run.data, users=200, candidates=4,
                               baseline=baseline)
    assert result["pairs"] == 800 and result["users"] == 200
    check = check_against_truth(result, run.data.manifest["generator"], spearman)
    assert check["spearman"] > 0.6, check
    assert check["ignored"]["device"] >= len(GROUPS) - 2, check  # bottom three
    completeness = result["completeness"]
    assert completeness["mean_abs_delta"] < 0.02 * completeness["mean_abs_score_minus_baseline"]


def test_the_check_rejects_an_untrained_model(run):
    """The control: the same architecture, untrained, fails the check (more
    tokens alone give text, image and history some mass, but not the order
    of the true click model, nor device at the bottom)."""
    from mmf.utils.build import build_model

    from mmf_rec.explain import global_importance, spearman

    torch.manual_seed(0)
    untrained = build_model(run.config.model_config.dlrm_mm).eval()
    result = global_importance(untrained, run.data, users=200, candidates=4)
    check = check_against_truth(result, run.data.manifest["generator"], spearman)
    assert check["spearman"] < 0.6 or check["ignored"]["device"] < len(GROUPS) - 2, check


def explain_tool(*args):
    """``tools/explain.py ARGS`` as a program; what it printed."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "explain.py"), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def test_cli_writes_pictures_and_json(run, tmp_path):
    from PIL import Image

    user = int(one_user(run)["sparse_user_id"][0, 0])
    save_dir = run.weights.parent
    printed = explain_tool("--run", str(save_dir), "--user", str(user), "--item", "4",
                           "--out", str(tmp_path))
    assert "contributions per feature group" in printed and "top words" in printed
    with open(tmp_path / f"u{user}_i4.json") as f:
        single = json.load(f)
    assert set(single["groups"]) == set(GROUPS) and single["item_id"] == 4
    assert Image.open(tmp_path / f"u{user}_i4.png").size[0] > 500

    printed = explain_tool("--run", str(save_dir), "--global", "--users", "40",
                           "--out", str(tmp_path))
    assert "Spearman vs the true click model" in printed
    with open(tmp_path / "global.json") as f:
        overall = json.load(f)
    assert overall["pairs"] == 160 and set(overall["mean_abs"]) == set(GROUPS)
    assert -1.0 <= overall["truth_check"]["spearman"] <= 1.0
    assert Image.open(tmp_path / "global.png").size[0] > 300
