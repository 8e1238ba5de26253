"""Training-time compression methods: funnel regularization (global rank revealing) and DeepTwist.

* Funnel (Chu & Lee): :func:`gate_model` makes every conv a lossless gated Tucker-2/SVD block,
  :class:`FunnelPenalty` is the global funnel penalty (``extra_loss`` of ``automtd.train.fit``),
  :func:`prune_and_fold` turns the trained gates into ranks and plain convs (the whole pipeline
  behind ``automtd funnel`` is :func:`automtd.workflows.run_funnel`).
* DeepTwist (Lee et al.): :func:`deeptwist_callback` is a ``step_callback`` that projects the selected
  kernels to low rank every ``S_D`` steps.
"""

from automtd.training_methods._deeptwist import (
    DeepTwist,
    DeepTwistConfig,
    Projection,
    deeptwist_callback,
    deeptwist_from_plan,
    plan_projections,
    project_weight,
    tile_rank,
    tiled_svd_project,
    truncated_svd,
)
from automtd.training_methods._funnel import AnnealSchedule, FunnelPenalty, funnel_param_groups, funnel_penalty
from automtd.training_methods._gated import (
    GatedSVDBlock,
    GatedTucker2Block,
    gate_model,
    gate_parameters,
    gated_blocks,
    lossless_tucker2,
)
from automtd.training_methods._prune import FoldedLayer, fold_block, prune_and_fold

__all__ = [
    "AnnealSchedule",
    "DeepTwist",
    "DeepTwistConfig",
    "FoldedLayer",
    "FunnelPenalty",
    "GatedSVDBlock",
    "GatedTucker2Block",
    "Projection",
    "deeptwist_callback",
    "deeptwist_from_plan",
    "fold_block",
    "funnel_param_groups",
    "funnel_penalty",
    "gate_model",
    "gate_parameters",
    "gated_blocks",
    "lossless_tucker2",
    "plan_projections",
    "project_weight",
    "prune_and_fold",
    "tile_rank",
    "tiled_svd_project",
    "truncated_svd",
]
