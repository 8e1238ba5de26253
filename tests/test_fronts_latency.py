"""The fronts suite on (accuracy, latency) searches: the fastest plan within each drop is selected, final rows get
measured speed-ups (resumably), and the summary, hypervolumes and targets are computed from them.  No timing is
asserted: only that timings are written, and written once."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, create_trial

from automtd import ConfigError
from automtd.baselines import uniform_plan
from automtd.checkpoints import save_checkpoint
from automtd.latency import model_key
from automtd.models import get_model
from automtd.plan import Plan, apply_plan

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import _fronts_final, _fronts_latency  # noqa: E402
from benchmarks._common import write_csv, write_json  # noqa: E402
from benchmarks._fronts import _searched_key  # noqa: E402
from benchmarks._fronts_config import FrontsConfig, load_fronts_config  # noqa: E402
from benchmarks._fronts_final import final_budget, final_rows, run_baselines, save_final  # noqa: E402
from benchmarks._fronts_latency import (  # noqa: E402
    latency_hypervolumes,
    latency_target,
    measure_keys,
    run_latency,
    summarize_latency,
)
from benchmarks._fronts_search import _kept_earlier, _select_plans, base_latency_ms, hypervolume_2d  # noqa: E402
from benchmarks._report_fronts import latency_lines  # noqa: E402

BASE = 92.0


@pytest.fixture(scope="module")
def plan() -> Plan:
    return uniform_plan(get_model("cifar_resnet20").eval(), "cp", 0.25, architecture="cifar_resnet20")


def _trial(plan: Plan, acc: float, latency: float, ratio: float, fidelity: int) -> FrozenTrial:
    attrs = {"accuracy": acc, "drop": BASE - acc, "params_ratio": ratio, "macs_ratio": ratio, "latency_ms": latency,
             "fidelity": fidelity, "plan": plan.to_dict()}
    return create_trial(values=[acc, latency], user_attrs=attrs)


def _study(plan: Plan) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "latency"])
    study.set_user_attr("base_accuracy", BASE)
    study.add_trials([
        _trial(plan, 91.8, 0.70, 1.5, 1),  # 0: within 0.5
        _trial(plan, 91.2, 0.50, 2.0, 1),  # 1: the fastest within 1.0 at the top rung
        _trial(plan, 91.5, 0.60, 5.0, 1),  # 2: the fastest within 0.5 and the most compressed within 1.0
        _trial(plan, 91.9, 0.30, 3.0, 0),  # 3: faster, but only at the lower rung
        _trial(plan, 89.0, 0.20, 8.0, 1),  # 4: 3 points down
    ])
    return study


def test_latency_search_selects_the_fastest_plan_within_each_drop_at_the_top_rung(tmp_path: Path, plan: Plan) -> None:
    study = _study(plan)
    fast = _select_plans(study, [0.5, 1.0, 2.0], None, tmp_path / "plans", "mixed", tmp_path, by_latency=True)
    assert [(s["rule"], s["trial"]) for s in fast] == [("d0.5", 2), ("d1", 1)]
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["mixed_d0.5.yaml", "mixed_d1.yaml"]
    small = _select_plans(study, [0.5, 1.0, 2.0], None, tmp_path / "params", "mixed", tmp_path)
    assert [(s["rule"], s["trial"]) for s in small] == [("d0.5", 2)]  # params: trial 2 is the most compressed


def test_base_latency_is_the_whole_model_entry_of_the_studys_table(plan: Plan) -> None:
    study = _study(plan)
    assert base_latency_ms(study) is None  # no table stored: trials timed themselves
    target = {"runtime": "onnxruntime", "threads": 1, "batch": 1, "input_size": [3, 32, 32], "machine": "m"}
    study.set_user_attr("automtd:latency_table", {
        "target": target, "blocks": {},
        "models": {model_key("other", "f"): {"whole_ms": 9.0},
                   model_key(plan.architecture, plan.fingerprint): {"whole_ms": 0.75}}})
    assert base_latency_ms(study) == 0.75


def _row(model: str, source: str, plan: str, drop: float, **speed: float) -> dict[str, Any]:
    return {"model": model, "source": source, "plan": plan, "drop": drop, "params_ratio": 2.0, **speed}


FINAL = [
    _row("m", "search mixed", "mixed_d1", 0.8, speedup_onnxruntime_b1=2.0, speedup_torch_b64=1.1),
    _row("m", "search mixed", "mixed_d2", 1.8, speedup_onnxruntime_b1=3.0, speedup_torch_b64=1.4),
    _row("m", "search cp", "cp_d1", 0.9, speedup_onnxruntime_b1=1.5, speedup_torch_b64=1.3),
    _row("m", "search ht2", "ht2_d0.5", 0.4, speedup_onnxruntime_b1=1.6, speedup_torch_b64=1.0),
    _row("m", "search tucker2", "tucker2_d2", 1.5, speedup_onnxruntime_b1=2.5, speedup_torch_b64=1.2),
    {"model": "m", "source": "VBMF Tucker-2", "plan": "baseline_vbmf_tucker2", "drop": 0.1, "params_ratio": 2.0},
]


def _trials(variant: str, points: list[tuple[float, float, int]]) -> list[dict[str, Any]]:
    return [{"model": "m", "variant": variant, "sampler": "tpe", "trial": i, "state": "COMPLETE", "accuracy": acc,
             "latency_ms": ms, "fidelity": rung} for i, (acc, ms, rung) in enumerate(points)]


def test_summary_hypervolume_and_targets_on_synthetic_rows() -> None:
    summary = summarize_latency(FINAL)
    by = {r["source"]: r for r in summary}
    assert set(by) == {"search mixed", "search cp", "search ht2", "search tucker2"}  # untimed rows left out
    assert by["search mixed"]["best_speedup_onnxruntime_b1_drop<=1"] == 2.0
    assert by["search mixed"]["best_speedup_onnxruntime_b1_drop<=2"] == 3.0
    assert by["search mixed"]["plan_speedup_onnxruntime_b1_drop<=2"] == "mixed_d2"
    assert by["search cp"]["best_speedup_onnxruntime_b1_drop<=0.5"] is None
    assert by["search cp"]["best_speedup_torch_b64_drop<=1"] == 1.3

    trials = [*_trials("mixed", [(91.0, 0.5, 1), (90.0, 0.4, 1), (91.5, 0.1, 0)]),  # the rung-0 point is ignored
              *_trials("cp", [(91.0, 0.8, 1)]), *_trials("tucker2", [(90.5, 0.6, 1)]), *_trials("ht2", [])]
    studies = [{"model": "m", "variant": v, "sampler": "tpe", "base_val_accuracy": BASE, "base_latency_ms": 1.0}
               for v in ("mixed", "cp", "tucker2", "ht2")]
    studies.append({"model": "m", "variant": "mixed", "sampler": "random", "base_val_accuracy": BASE})  # no table
    hv = {h["variant"]: h for h in latency_hypervolumes(trials, studies, 10.0)}
    assert set(hv) == {"mixed", "cp", "tucker2", "ht2"}
    assert hv["mixed"]["rung"] == 1 and hv["mixed"]["n_points"] == 2
    assert hv["mixed"]["hypervolume"] == pytest.approx(hypervolume_2d([(91.0, 2.0), (90.0, 2.5)], (82.0, 1.0)))
    assert hv["ht2"]["hypervolume"] == 0.0

    (t,) = latency_target(summary, list(hv.values()), "speedup_onnxruntime_b1")
    assert t["mixed_variant"] == "mixed" and t["hv_met"] and t["hv_mixed"] > t["hv_best_single"]
    assert (t["mixed"], t["best_single"]) == (2.0, 1.6) and t["ratio"] == pytest.approx(1.25) and t["met"]
    assert t["best_ort_b1"] == 2.0 and t["ort_b1_met"]
    (t64,) = latency_target(summary, list(hv.values()), "speedup_torch_b64")
    assert t64["ratio"] == pytest.approx(1.1 / 1.3) and not t64["met"]
    worse = [{**h, "hypervolume": 100.0} if h["variant"] == "cp" else h for h in hv.values()]
    assert not latency_target(summary, worse, "speedup_onnxruntime_b1")[0]["hv_met"]

    # a second mixed space is judged alone, never as the best of the two
    err = {"model": "m", "variant": "mixed_error", "sampler": "tpe", "rung": 1, "hypervolume": 1.0}
    by_variant = {t["mixed_variant"]: t for t in latency_target(summary, [*hv.values(), err], "speedup_onnxruntime_b1")}
    assert set(by_variant) == {"mixed", "mixed_error"} and by_variant["mixed"]["met"]
    assert not by_variant["mixed_error"]["hv_met"] and by_variant["mixed_error"]["mixed"] is None

    payload = {"latency_summary": summary, "latency_hypervolume": list(hv.values()), "hv_ref_drop": 10.0,
               "latency_target": [t]}
    text = "\n".join(latency_lines(payload, {"final": FINAL}))
    assert "## Fastest measured plan within a test-accuracy drop" in text and "ORT b1 x @ <=1" in text
    assert latency_lines({"summary": []}, {"final": FINAL[-1:]}) == []  # a params suite's report is unchanged
    assert summarize_latency(FINAL[-1:]) == []


def _config(tmp_path: Path, extra: str) -> FrontsConfig:
    path = tmp_path / "fronts.yaml"
    path.write_text("models:\n  - {name: cifar_resnet20, search_config: configs/bench_search_latency_resnet20.yaml}\n"
                    "final: {recipe: apply, epochs: 1}\n" + extra)
    return load_fronts_config(path)


def test_latency_measure_is_off_by_default_and_refuses_unknown_keys(tmp_path: Path) -> None:
    assert _config(tmp_path, "").latency_measure is None
    with pytest.raises(ConfigError, match="roundz"):
        _config(tmp_path, "latency_measure: {runtimes: [onnxruntime], roundz: 3}\n")
    with pytest.raises(ConfigError, match="runtimes"):
        _config(tmp_path, "latency_measure: {runtimes: [tensorrt]}\n")


def test_the_searched_latency_is_known_in_a_run_of_one_single_method_variant(tmp_path: Path) -> None:
    """`--set 'variants={cp: [cp, none]}'` (one search per call) leaves out the sampler variant (mixed); the
    summary still reads the latency every variant's search optimised."""
    one = _config(tmp_path, "variants: {cp: [cp, none]}\n")
    assert one.sampler_variant not in one.variants
    assert _searched_key(one, one.models[0], tmp_path) == "speedup_onnxruntime_b1"


def test_a_search_call_keeps_the_variants_earlier_calls_searched(tmp_path: Path) -> None:
    """One variant per call (an hour each): the second call's tables keep the first call's study and trials."""
    study = {"model": "m", "sampler": "tpe", "study": "s", "selected": []}
    write_json(tmp_path / "fronts_searches.json",
               {"studies": [{**study, "variant": "mixed"}, {**study, "variant": "cp"}]})
    write_csv(tmp_path / "fronts_trials.csv", [{"model": "m", "variant": v, "sampler": "tpe", "trial": t}
                                               for v in ("mixed", "cp", "gone") for t in range(2)])
    studies, rows = _kept_earlier(tmp_path, {("m", "cp", "tpe")})  # this call searched cp again
    assert [s["variant"] for s in studies] == ["mixed"]
    assert [(r["variant"], r["trial"]) for r in rows] == [("mixed", "0"), ("mixed", "1")]  # no study, no rows
    assert _kept_earlier(tmp_path / "empty", set()) == ([], [])


def test_baselines_part_writes_alds_latency_plans_on_the_search_configs_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, "baselines: {vbmf_tucker2: false, ht2_energies: [], uniform_cp_fractions: [], "
                            "alds_latency: [{methods: [svd_channel], speedup: 1.2}]}\n")
    monkeypatch.setattr(_fronts_final, "load_pretrained", lambda name: get_model(name).eval())
    (row,) = run_baselines(cfg, tmp_path)["baselines"]
    assert row["plan"] == "fronts/plans/cifar_resnet20/baseline_alds_latency_svd_channel_s1.2.yaml"
    plan = Plan.load(tmp_path / row["plan"])
    assert {lp.method for lp in plan.layers} == {"svd_channel"} and row["params_ratio"] > 1.0
    with pytest.raises(ConfigError, match="speedup"):
        _config(tmp_path, "baselines: {alds_latency: [{methods: [cp], speedup: 1.0}]}\n")


def test_measure_part_times_each_checkpoint_once(tmp_path: Path, plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    model = apply_plan(get_model("cifar_resnet20").eval(), plan)
    ck = save_checkpoint(tmp_path / "ck", model, architecture="cifar_resnet20", plan=plan.to_dict())
    cfg = _config(tmp_path, "latency_measure: {runtimes: [onnxruntime, torch], batches: [1, 2], threads: 1, "
                            "rounds: 1, min_run_time: 0.01}\n")
    budget = final_budget(cfg.final)
    rows = [_row("cifar_resnet20", "search mixed", "mixed_d1", 0.5), _row("cifar_resnet20", "search cp", "cp_d1", 0.2)]
    rows[0]["checkpoint"] = str(ck)  # the second row has none (a kd-recipe row): left untimed
    save_final(tmp_path, budget, rows)
    originals: list[str] = []

    def original(name: str) -> Any:
        originals.append(name)
        return get_model(name)

    run_latency(cfg, tmp_path, load_original=original)
    assert cfg.latency_measure is not None
    done = {r["plan"]: r for r in final_rows(tmp_path, budget)}
    keys = measure_keys(cfg.latency_measure)
    assert len(keys) == 12 and all(done["mixed_d1"][k] > 0 for k in keys)
    assert done["mixed_d1"]["speedup_torch_b2"] == pytest.approx(
        done["mixed_d1"]["ms_torch_b2_original"] / done["mixed_d1"]["ms_torch_b2"])
    assert not any(k in done["cp_d1"] for k in keys) and originals == ["cifar_resnet20"]

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a timed row was timed again")

    monkeypatch.setattr(_fronts_latency, "measure_pair", fail)
    run_latency(cfg, tmp_path, load_original=original)
    assert {r["plan"]: r for r in final_rows(tmp_path, budget)} == done
