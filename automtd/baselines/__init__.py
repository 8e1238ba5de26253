"""Baseline plan generators (no search), registered by name for the CLI.

* ``uniform``: one method at one parameter fraction wherever the method applies; the other layers
  get a fallback method (default ``svd``: ``svd_channel`` for convs, ``svd_linear`` for linear layers).
  The first conv (the one reading the input channels) and the classifier are skipped unless included.
* ``vbmf-tucker2`` (Kim et al., ICLR 2016): Tucker-2 on every kxk conv, ranks from EVBMF of the
  mode-C and mode-T unfoldings (``automtd.ranks.evbmf`` through ``Tucker2.ranks_for_evbmf``).
* ``ht2-energy`` (Gabor & Zdunek 2023): one global energy; kxk convs get ``ht2`` by the energy rule,
  the first conv and all 1x1 convs (ResNet downsample convs included) get ``svd_channel`` and linear
  layers ``svd_linear`` at the same energy.
* ``alds`` (Liebenwein et al. 2021, ALDS): one method (``svd``: each layer's SVD variant) and a global
  params ratio; per layer the ranks minimising the largest relative reconstruction error of any layer
  within the budget (a fallback method where the method does not apply, first conv and classifier as
  in ``uniform``).
* ``alds-latency``: the same min-max error allocation across several methods under a latency budget (the
  original's predicted latency over ``speedup``) on a per-layer latency table (``automtd latency-table``): per
  layer the method and ranks its runtime runs fastest at the allowed error.

Every rule generator leaves a layer dense, with the reason in ``plan.skipped``, when its decomposition would
not have fewer parameters than the dense layer (``allow_growth=True`` keeps such layers decomposed).
"""
from automtd.baselines._alds import (
    AldsAllocation,
    LayerOption,
    alds_allocation,
    alds_plan,
    layer_options,
    min_max_error,
)
from automtd.baselines._alds_latency import alds_latency_plan, latency_options
from automtd.baselines._registry import Baseline, get_baseline, list_baselines, register_baseline, run_baseline
from automtd.baselines._rules import ht2_energy_plan, uniform_plan, vbmf_tucker2_plan

__all__ = [
    "AldsAllocation",
    "Baseline",
    "LayerOption",
    "alds_allocation",
    "alds_latency_plan",
    "alds_plan",
    "get_baseline",
    "ht2_energy_plan",
    "latency_options",
    "layer_options",
    "list_baselines",
    "min_max_error",
    "register_baseline",
    "run_baseline",
    "uniform_plan",
    "vbmf_tucker2_plan",
]

register_baseline(
    Baseline(
        "uniform",
        uniform_plan,
        "one method at one parameter fraction everywhere it applies, a fallback elsewhere",
        required=("method", "fraction"),
        optional=("fallback", "include_first", "include_classifier", "allow_growth"),
    )
)
register_baseline(
    Baseline(
        "vbmf-tucker2",
        vbmf_tucker2_plan,
        "Tucker-2 on kxk convs with EVBMF ranks (Kim et al. 2016)",
        optional=("include_first", "allow_growth"),
    )
)
register_baseline(
    Baseline(
        "ht2-energy",
        ht2_energy_plan,
        "HT-2 / conv-SVD / FC-SVD at one global energy (Gabor & Zdunek 2023)",
        required=("energy",),
        optional=("include_first", "include_classifier", "allow_growth"),
    )
)
register_baseline(
    Baseline(
        "alds",
        alds_plan,
        "ranks minimising the largest per-layer relative error under a global params ratio (Liebenwein et al. 2021)",
        required=("method", "ratio"),
        optional=("fallback", "include_first", "include_classifier"),
    )
)
register_baseline(
    Baseline(
        "alds-latency",
        alds_latency_plan,
        "per layer the method and ranks minimising the largest relative error under a predicted latency budget "
        "(original / speedup) from a latency table",
        required=("methods", "speedup", "table"),
        optional=("runtime", "batch", "threads", "include_first", "include_classifier"),
    )
)
