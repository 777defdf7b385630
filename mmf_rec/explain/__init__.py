"""Why this recommendation: Integrated Gradients over the ranker's token vectors.

``dlrm_mm`` scores a (user, item) pair from two sets of d-vectors ("tokens",
see ``mmf_rec/models/dlrm_mm.py``). This module attributes the click logit to
those tokens with Captum's Integrated Gradients (IG), i.e. at the output of
the embedding layers (the layer attribution of every encoder at once), and
sums the token attributions into feature groups:

==============  =====================================================
group           tokens
==============  =====================================================
dense           the bottom MLP's output (all dense features together)
<user feature>  each user categorical's embedding (user_id, region, ...)
history         the user's past items: each one's id embedding (its
                share of the mean-pooled history bag), text vector and
                image vector; also reported per past item
<item feature>  each item attribute's embedding (item_id, category, ...)
text            the description's token vectors (one per word piece,
                summed into words through the tokenizer)
image           the photo's region vectors (one per grid cell)
==============  =====================================================

Baselines (``baseline=``), the input IG integrates from:

* ``"zero"`` (default): every token vector is zero. For this model zero means
  *absent*, exactly: a padding or blanked id is a zero vector, an empty
  history is zeros, and a token group whose vectors are all zero scores as a
  missing one (MaxSim 0, pooled vector 0), so the baseline is "no user
  features, no history, empty text, no image". Attributions answer "how much
  did this feature add to the score compared with not having it".
* ``"mean"``: every token is replaced by its average over a reference
  population (user tokens over up to 1,024 training rows, history and text
  tokens by their mean over valid tokens, item attributes and image cells by
  their per-position mean over the catalogue). Attributions answer "how much
  did this value move the score away from an average user / item".

Padded and masked positions keep their own value in both baselines, so they
get exactly zero attribution.

Completeness: IG's attributions sum to ``score(x) - score(baseline)`` up to
the integration error; every :class:`Explanation` carries Captum's
convergence ``delta`` (sum of attributions minus that difference).

Modules: ``tokens`` (the token vectors as IG inputs, the score as their
function), ``baselines``, ``attributions`` (:class:`Explainer`,
:class:`Explanation`), ``samples`` (the user rows explained) and
``importance`` (mean |attribution| per group over many pairs). Load a run
with :func:`mmf_rec.runs.load_run`; its ``data`` is the prepared data.
"""

from mmf_rec.explain.baselines import BASELINES, Baseline, mean_baseline
from mmf_rec.explain.attributions import (
    N_STEPS, SPECIAL_TOKENS, Explainer, Explanation, explain, explainer,
)
from mmf_rec.explain.importance import global_importance, spearman
from mmf_rec.explain.samples import sample_pairs, user_sample

__all__ = [
    "BASELINES", "Baseline", "mean_baseline", "N_STEPS", "SPECIAL_TOKENS", "Explainer",
    "Explanation", "explain", "explainer", "global_importance", "spearman", "sample_pairs",
    "user_sample",
]
