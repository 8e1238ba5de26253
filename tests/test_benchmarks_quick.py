"""Smoke tests of ``python -m benchmarks``: the quick suites run and write well-formed results; every
benchmark and GPU-scale config validates against the real config classes.  No timing is asserted."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _loader(path: Path) -> Callable[[Path], Any]:
    name = path.name
    if name.startswith("train_"):
        from automtd.workflows import load_train_config

        return load_train_config
    if name.startswith("funnel_"):
        from automtd.workflows import load_funnel_config

        return load_funnel_config
    if name.startswith(("mtd_", "latency_", "bench_search_")):
        from automtd.search import load_search_config

        return load_search_config
    if name.startswith("bench_fronts"):
        sys.path.insert(0, str(REPO))
        from benchmarks._fronts_config import load_fronts_config

        return load_fronts_config
    raise AssertionError(f"no loader known for {path}; name it train_/funnel_/mtd_/latency_/bench_search_/"
                         "bench_fronts*")


BENCH_CONFIGS = sorted(CONFIGS.glob("gpu/*.yaml")) + sorted(CONFIGS.glob("bench_*.yaml"))


def test_gpu_configs_exist() -> None:
    names = {p.name for p in CONFIGS.glob("gpu/*.yaml")}
    assert {"train_vgg11_cifar10.yaml", "train_vgg16_cifar10.yaml", "mtd_vgg11_cifar10.yaml",
            "mtd_vgg16_cifar10.yaml", "funnel_resnet18_imagenet.yaml", "latency_resnet56_cuda.yaml"} <= names


@pytest.mark.parametrize("path", BENCH_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_validates(path: Path) -> None:
    cfg = _loader(path)(path)
    assert cfg is not None


def test_a_variant_gets_its_own_search_overrides(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._fronts_config import load_fronts_config
    from benchmarks._fronts_search import search_config

    cfg = load_fronts_config(CONFIGS / "bench_fronts_compress_resnet20.yaml")
    model = cfg.models[0]
    error = search_config(cfg, model, "mixed_error", "tpe", tmp_path)
    plain = search_config(cfg, model, "mixed", "tpe", tmp_path)
    assert (error.space.sampling, plain.space.sampling) == ("error", "budget")
    assert error.space.conv == plain.space.conv and error.study.name != plain.study.name


def test_hypervolume_2d() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._fronts_search import hypervolume_2d

    ref = (80.0, 1.0)
    assert hypervolume_2d([], ref) == 0.0
    assert hypervolume_2d([(90.0, 3.0)], ref) == pytest.approx(20.0)
    # a dominated point adds nothing; two staircase points add their union
    assert hypervolume_2d([(90.0, 3.0), (85.0, 2.0)], ref) == pytest.approx(20.0)
    assert hypervolume_2d([(90.0, 2.0), (85.0, 4.0)], ref) == pytest.approx(10.0 + 5.0 * 2.0)


def test_report_without_results_says_not_run(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._report import BLOCKS, run_report

    md = run_report(tmp_path, tmp_path / "BENCHMARKS.md").read_text()
    assert "## 1. Compression fronts" in md and "**Not run.**" in md and "configs/gpu/" in md
    assert md.count("<!-- generated: ") == md.count("<!-- end generated -->") == len(BLOCKS)
    assert not list(tmp_path.glob("report_*.md"))  # no results, no detail files


def test_the_repository_report_is_short_and_has_every_block() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._report import BLOCKS

    text = (REPO / "BENCHMARKS.md").read_text()
    assert len(text.splitlines()) <= 400
    assert all(f"<!-- generated: {name} -->" in text for name in BLOCKS)


def test_fill_blocks_replaces_only_the_generated_text() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._report import fill_blocks

    text = "# T\n\nhand\n\n<!-- generated: a -->\nold\n<!-- end generated -->\n\nmore hand\n"
    filled = fill_blocks(text, {"a": "| x |\n"})
    assert filled == "# T\n\nhand\n\n<!-- generated: a -->\n| x |\n\n<!-- end generated -->\n\nmore hand\n"
    assert fill_blocks(filled, {"a": "| x |\n"}) == filled  # re-rendering the same results changes nothing
    with pytest.raises(SystemExit, match=r"no generated block\(s\) \['b'\]"):
        fill_blocks(text, {"b": "y"})


def test_unknown_argument_is_an_error() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks", "speed", "--bogus"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--bogus" in out.stderr


def test_quick_trial_cost_writes_both_paths(tmp_path: Path, data_root: Path, weights_dir: Path) -> None:
    env = {**os.environ, "AUTOMTD_DATA": str(data_root), "AUTOMTD_WEIGHTS": str(weights_dir.parent),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmarks", "trial-cost", "--quick", "--out", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "trial_cost.json").read_text())
    _check_envelope(payload, "trial-cost")
    paths = [row["path"] for row in payload["trials"]["summary"]]
    assert paths == ["old", "new-fp32", "new"] and [r["path"] for r in payload["epoch"]["summary"]] == paths
    for row in payload["trials"]["summary"]:
        assert row["finetune_s"] > 0 and row["evaluate_s"] > 0 and 0.0 <= row["mean_accuracy"] <= 100.0
    assert "| old |" in (tmp_path / "trial_cost.md").read_text()


def _check_envelope(payload: dict[str, Any], suite: str) -> None:
    assert payload["suite"] == suite and payload["quick"] is True
    machine = payload["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["date_utc"]
    assert payload["command"].startswith("python -m benchmarks")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_quick_suites_write_results(tmp_path: Path, data_root: Path, weights_dir: Path) -> None:
    env = {**os.environ, "AUTOMTD_DATA": str(data_root), "AUTOMTD_WEIGHTS": str(weights_dir.parent)}
    out = subprocess.run([sys.executable, "-m", "benchmarks", "all", "--quick", "--out", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    fronts = json.loads((tmp_path / "fronts.json").read_text())
    _check_envelope(fronts, "fronts")
    assert fronts["summary"] and {"model", "source"} <= set(fronts["summary"][0])
    final = json.loads((tmp_path / "fronts_final.json").read_text())
    assert final["final"], "no plan got the final fine-tune"
    for row in final["final"]:
        assert row["params_ratio"] > 1.0 and 0.0 <= row["test_acc"] <= 100.0
    searches = json.loads((tmp_path / "fronts_searches.json").read_text())
    assert {(s["variant"], s["sampler"]) for s in searches["studies"]} >= {("mixed", "tpe"), ("mixed", "random")}
    hv = _csv_rows(tmp_path / "fronts_hypervolume.csv")
    assert hv and all(float(r["hypervolume"]) >= 0.0 for r in hv)
    for study in searches["studies"]:
        assert study["wall_s"] > 0
        if study["sampler"] == "tpe":  # front_max_drop 100: every Pareto-optimal trial gets the final fine-tune
            assert any(p["rule"].startswith(("t", "d")) for p in study["selected"]), study
    finals = {r["plan"] for r in final["final"]}
    assert all(Path(p["plan"]).stem in finals for s in searches["studies"] for p in s["selected"])
    trials = _csv_rows(tmp_path / "fronts_trials.csv")
    assert trials and "warmstart" in trials[0]
    # one factor cache for the whole suite, none per study
    assert (tmp_path / "fronts" / "factors").is_dir()
    assert not list((tmp_path / "fronts" / "studies").glob("*.cache"))
    sens = json.loads((tmp_path / "fronts_sensitivity.json").read_text())
    assert [t["model"] for t in sens["sensitivity"]] == ["cifar_resnet20"]  # found the mixed study (no pass: quick)

    speed = json.loads((tmp_path / "speed.json").read_text())
    _check_envelope(speed, "speed")
    assert speed["layers"] and speed["models"] and speed["threads"] >= 1
    for row in speed["layers"] + speed["models"]:
        assert row["speedup"] > 0 and row["efficiency"] > 0
    for part in ("layers", "models"):
        assert {r["mode"] for r in speed[part]} == {"eager", "deployed"}
    assert _csv_rows(tmp_path / "speed_models.csv")
    kinds = {r["kind"] for r in speed["kernels"]}
    assert {"dense 3x3", "1x1", "depthwise 3x3"} <= kinds and all(r["gmacs_per_s"] > 0 for r in speed["kernels"])
    assert speed["keep_freed_memory"] in (True, False) and _csv_rows(tmp_path / "speed_kernels.csv")
    pad = speed["padding"]
    assert {r["method"] for r in pad} == {"cp", "tucker2"} and _csv_rows(tmp_path / "speed_padding.csv")
    for r in pad:  # only modules with a rank off a multiple; each form's widths on its multiple, all timed
        assert r["plain_ms"] > 0 and r["form_ms"] > 0 and all(w % r["multiple"] == 0 for w in r["widths"])
        if r["form"] != "auto":
            assert r["form"] == f"pad {r['multiple']}" and any(rank % r["multiple"] for rank in r["ranks"])
        assert (r["extra_macs"] > 0) == (r["multiple"] > 1)
    assert {r["form"] for r in pad} >= {"pad 8", "auto"}
    (row,) = speed["collapse"]
    assert row["plan"] == "uniform CP f=0.25" and row["chains"] == 18 and 0 <= row["merged"] <= row["collapsed"] <= 18
    assert row["orig_ms"] > 0 and row["chains_ms"] > 0 and row["collapse_ms"] > 0 and row["dense_only_ms"] > 0
    assert 0 <= row["collapsed_dense"] <= 18
    assert (row["deployed_macs_ratio"] < row["macs_ratio"]) if row["collapsed"] else row["deployed_macs_ratio"] > 1
    assert _csv_rows(tmp_path / "speed_collapse.csv")
    alloc = {(r["shape"], r["module"]): r for r in speed["allocator"]}
    assert ("ResNet-20 (whole)", "original") in alloc and any(m == "cp" for _, m in alloc)
    assert all(r["default_ms"] > 0 and r["keep_ms"] > 0 for r in alloc.values())

    cost = json.loads((tmp_path / "search_cost.json").read_text())
    _check_envelope(cost, "search-cost")
    assert cost["studies"] and cost["studies"][0]["n_trials"] >= 1
    assert cost["studies"][0]["mean_storage_s"] > 0 and cost["studies"][0]["mean_sample_s"] > 0
    assert cost["cache_saving"] and cost["cache_saving"][0]["cold_s"] > 0

    md = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("## 1. Compression fronts", "## 2. Real speed", "## 3. Search cost", "## 6. GPU-scale"):
        assert heading in md
    assert "**Not run.**" not in md.split("## 4.")[0] and "(report_speed.md)" in md and "(report_fronts.md)" in md
    speed_md = (tmp_path / "report_speed.md").read_text()
    for heading in ("## Throughput of each conv kind", "## Ranks padded to a SIMD multiple: fixed vs measured",
                    "## Allocator: glibc defaults vs", "## Chains vs their dense product"):
        assert heading in speed_md
    assert "| front " in (tmp_path / "report_speed.md").read_text()
    assert "## Every plan after the final fine-tune" in (tmp_path / "report_fronts.md").read_text()
    assert (tmp_path / "plots" / "fronts.png").is_file()

    # a second final budget on the plans this run saved, in two processes on disjoint plan sets sharing one folder
    plans = tmp_path / "fronts" / "plans" / "cifar_resnet20"
    twin = plans / "mixed_twin.yaml"
    twin.write_bytes((plans / "baseline_ht2_e0.7.yaml").read_bytes())  # a mixed plan with a baseline's layers
    long = tmp_path / "fronts_long"
    cmd = [sys.executable, "-m", "benchmarks", "fronts", "--config", str(CONFIGS / "bench_fronts_quick.yaml"),
           "--out", str(long), "--parts", "final", "--set", f"final.plans_from={tmp_path}", "--set", "final.steps=2"]
    procs = [subprocess.Popen([*cmd, "--set", f"final.only={only}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for only in ("[baseline_*, mixed_twin]", "[ht2_*]")]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    rows = {r["plan"]: r for r in json.loads((long / "fronts_final.json").read_text())["final"]}
    assert set(rows) == {"baseline_ht2_e0.7", "mixed_twin"} | {p.stem for p in plans.glob("ht2_*.yaml")}
    assert all(r["finetune_steps"] == 2 for r in rows.values())
    assert rows["mixed_twin"]["same_as"] == "baseline_ht2_e0.7" and rows["mixed_twin"]["source"] == "search mixed"
    assert rows["mixed_twin"]["test_acc"] == rows["baseline_ht2_e0.7"]["test_acc"]
    again = subprocess.run([*cmd, "--set", "final.only=[ht2_t*]"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)  # same budget: measured rows kept, nothing re-run, no row lost
    assert again.returncode == 0 and "already measured" in again.stderr
    assert set(json.loads((long / "fronts_final.json").read_text())["final"][0]) >= {"plan", "test_acc"}
    assert len(json.loads((long / "fronts_final.json").read_text())["final"]) == len(rows)
    typo = subprocess.run([*cmd, "--set", "final.only=[cp_nope]"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert typo.returncode != 0 and "['cp_nope'] matches no plan" in typo.stderr.strip().splitlines()[-1]
    report = subprocess.run([sys.executable, "-m", "benchmarks", "report", "--out", str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    long_md = (tmp_path / "report_fronts_long.md").read_text()
    assert "## The same plans after 1 and after 2 final fine-tune steps" in long_md
    assert "points recovered" in long_md and "| same as |" in long_md
    assert "(report_fronts_long.md)" in (tmp_path / "BENCHMARKS.md").read_text()


def test_sensitivity_winners_picks_lowest_drop_then_fewest_params() -> None:
    from benchmarks._fronts_search import sensitivity_winners

    def row(layer: str, method: str, fraction: float, drop: float | None, kept: float) -> dict[str, object]:
        return {"layer": layer, "method": method, "fraction": fraction, "drop": drop, "layer_ratio": kept}

    table = {"rows": [
        row("a", "cp", 0.25, 1.0, 0.25), row("a", "tucker2", 0.25, 3.0, 0.24), row("a", "ht2", 0.25, None, 0.2),
        row("b", "cp", 0.25, 0.0, 0.25), row("b", "tucker2", 0.25, 0.0, 0.22),
    ]}
    out = {w["layer"]: w for w in sensitivity_winners(table)}
    assert out["a"]["winner"] == "cp" and not out["a"]["tied"] and "drop_ht2" not in out["a"]
    assert out["b"]["winner"] == "tucker2" and out["b"]["tied"] and out["b"]["kept_cp"] == 0.25


def test_final_rows_from_two_processes_keep_both_commands(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._fronts_final import save_final

    budget = {"steps": 3}

    def row(plan: str) -> dict[str, object]:
        return {"model": "m", "plan": plan, "plan_sha": plan * 4, "params_ratio": 2.0, "drop": 0.5}

    save_final(tmp_path, budget, [row("a")], header={"command": "run a"})
    save_final(tmp_path, budget, [row("b")], header={"command": "run b"})
    saved = json.loads((tmp_path / "fronts_final.json").read_text())
    assert [r["plan"] for r in saved["final"]] == ["a", "b"] and saved["commands"] == ["run a", "run b"]
    save_final(tmp_path, {"steps": 4}, [row("c")], header={"command": "run c"})  # another budget: rows replaced
    saved = json.loads((tmp_path / "fronts_final.json").read_text())
    assert [r["plan"] for r in saved["final"]] == ["c"] and saved["commands"] == ["run c"]


@pytest.mark.parametrize("cpus", [("cpu A", "cpu A"), ("cpu A", "cpu B")])
def test_final_table_names_the_cpu_when_rows_span_machines(tmp_path: Path, cpus: tuple[str, str]) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._fronts_final import save_final
    from benchmarks._report_fronts import fronts_detail

    for plan, cpu in zip(("a", "b"), cpus, strict=True):
        row = {"model": "m", "source": "search cp", "plan": plan, "plan_sha": plan * 4, "methods": "cp",
               "params_ratio": 2.0, "macs_ratio": 1.5, "test_acc": 90.0, "drop": 0.5, "finetune_s": 10.0,
               "cpu": cpu, "measured_utc": "2026-12-03 16:00 UTC"}
        save_final(tmp_path, {"steps": 3}, [row], header={"command": f"run {plan}", "machine": {"cpu_model": cpu}})
    text = "\n".join(fronts_detail(tmp_path, tmp_path / "report_fronts.md", "# fronts", "python -m benchmarks fronts"))
    spans = cpus[0] != cpus[1]
    assert ("| CPU | measured |" in text) is spans
    assert ("measured on 2 CPUs (`cpu A`, `cpu B`)" in text) is spans
    assert "| cpu B | 2026-12-03 16:00 UTC |" in text if spans else "cpu B" not in text


def test_proxy_correlations_rank_and_leave_baselines_out(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_proxy import correlations, final_drops

    final = tmp_path / "fronts_final.csv"
    final.write_text("model,plan,drop\nm,baseline_x,9.0\nm,a,1.0\nm,b,2.0\nm,c,3.0\nother,a,50.0\n")
    drops = final_drops(final, "m")
    assert drops == {"baseline_x": 9.0, "a": 1.0, "b": 2.0, "c": 3.0}  # the other model's row is not read
    rows = [{"plan": plan, "up": up, "down": down, "flat": 1.0}
            for plan, up, down in (("baseline_x", 0.0, 9.0), ("a", 1.0, 3.0), ("b", 2.0, 2.0), ("c", 3.0, 1.0),
                                   ("not_in_final", 5.0, 5.0))]
    got = {r["plans"]: r for r in correlations(rows, {"f": drops}, ["up", "down", "flat"])}
    assert got["searched"]["n"] == 3 and got["all"]["n"] == 4
    assert got["searched"]["up"] == 1.0 and got["searched"]["down"] == -1.0
    assert got["all"]["up"] == pytest.approx(-0.2) and got["all"]["down"] == pytest.approx(0.2)
    assert got["all"]["flat"] is None  # a constant score has no rank correlation


def test_proxy_refuses_a_bad_final_argument(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/bench_proxy.py", "--search-config",
                          "configs/bench_search_quick.yaml", "--plans", str(tmp_path), "--final", "no-equals-sign"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--final 'no-equals-sign': give LABEL=CSV" in out.stderr


def test_proxy_quick_run_writes_scores(tmp_path: Path, data_root: Path, weights_dir: Path) -> None:
    env = {**os.environ, "AUTOMTD_DATA": str(data_root), "AUTOMTD_WEIGHTS": str(weights_dir.parent)}
    plans = REPO / "benchmarks" / "results" / "fronts" / "plans" / "cifar_resnet20"
    out = subprocess.run([sys.executable, "-m", "benchmarks", "proxy", "--", "--search-config",
                          "configs/bench_search_quick.yaml", "--plans", str(plans), "--limit", "3",
                          "--test-images", "100", "--final", f"short={REPO / 'benchmarks/results/fronts_final.csv'}",
                          "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "proxy.json").read_text())
    assert saved["suite"] == "proxy" and saved["quick"] is True and saved["machine"]["cpu_model"]
    assert saved["command"].startswith("python benchmarks/bench_proxy.py --search-config")
    assert saved["base_val_acc"] == 100.0  # the pretrained net has memorised the val split
    assert [r["plan"] for r in saved["rows"]] == sorted(p.stem for p in plans.glob("*.yaml"))[:3]
    for r in saved["rows"]:
        assert 0.0 <= r["val_drop"] <= 100.0 and -100.0 <= r["test100_drop"] <= 100.0 and r["val_kl"] >= 0.0
    assert {c["plans"] for c in saved["correlations"]} == {"all", "searched"}
    assert "| final | plans | n | val_drop | test100_drop | val_kl |" in (tmp_path / "proxy.md").read_text()


def test_speed_provenance_credits_each_kept_part_to_the_run_that_measured_it() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._speed import _provenance

    amd = {"kept": ["layers", "models"], "command": "speed all", "machine": {"cpu_model": "AMD"}}
    last = {"command": "speed collapse r20", "machine": {"cpu_model": "Xeon"}, "previous": amd}
    chain = _provenance(last, ["layers", "models", "collapse cifar_resnet20"])
    assert chain is not None
    assert (chain["kept"], chain["command"]) == (["collapse cifar_resnet20"], "speed collapse r20")
    assert (chain["previous"]["kept"], chain["previous"]["command"]) == (["layers", "models"], "speed all")
    assert "previous" not in chain["previous"]
    # a part re-measured now is credited to nobody; one the last run measured itself goes to the last run
    only = _provenance(last, ["models"])
    assert only == {"kept": ["models"], "command": "speed all", "machine": {"cpu_model": "AMD"}}
    assert _provenance({"command": "c", "machine": {}}, ["padding"]) == {"kept": ["padding"], "command": "c",
                                                                          "machine": {}}
    # one model's rows of a part: credited to the run that named that model, else as the whole part
    r56 = {"command": "speed collapse r56", "machine": {"cpu_model": "EPYC"},
           "previous": _provenance(last, ["layers", "models", "collapse cifar_resnet20"])}
    chain = _provenance(r56, ["layers", "models cifar_resnet20", "collapse cifar_resnet20", "collapse cifar_resnet56"])
    assert chain is not None
    credited = {}
    node: dict[str, Any] | None = chain
    while node:
        credited.update({part: node["command"] for part in node["kept"]})
        node = node.get("previous")
    assert credited == {"layers": "speed all", "models cifar_resnet20": "speed all",
                        "collapse cifar_resnet20": "speed collapse r20",
                        "collapse cifar_resnet56": "speed collapse r56"}


def test_summary_adds_the_mtd_paper_point_beside_a_vgg_run() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._fronts import summarize

    rows = [{"model": "cifar_vgg11_bn", "source": "search cp", "params_ratio": 3.0, "macs_ratio": 2.0, "drop": 0.8}]
    summary = {r["source"]: r for r in summarize(rows)}
    mtd = summary["MTD paper (abstract, methods.md s.3)"]
    assert mtd["best_params_ratio_drop<=1"] == 32.0 and mtd["best_params_ratio_drop<=0.5"] is None
    assert summary["search cp"]["best_params_ratio_drop<=1"] == 3.0
    resnet = [{**rows[0], "model": "cifar_resnet20"}]
    assert not any(r["source"].startswith("MTD") for r in summarize(resnet))


def test_a_base_model_trained_here_is_loaded_from_its_run_folder(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    sys.path.insert(0, str(REPO))
    from automtd.checkpoints import save_checkpoint
    from automtd.models import get_model
    from benchmarks import _common

    monkeypatch.setattr(_common, "REPO", tmp_path)
    with pytest.raises(SystemExit, match="train it first: automtd train configs/train_vgg11_cifar10_cpu.yaml"):
        _common.load_pretrained("cifar_vgg11_bn")
    model = get_model("cifar_vgg11_bn")
    save_checkpoint(tmp_path / _common.TRAINED["cifar_vgg11_bn"][0], model, architecture="cifar_vgg11_bn")
    loaded = _common.load_pretrained("cifar_vgg11_bn")
    assert not loaded.training
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(SystemExit, match="allowed: cifar_resnet20, .*cifar_vgg11_bn"):
        _common.load_pretrained("cifar_vgg99")


def test_bench_cp_speed_quick_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "cp_speed.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_cp_speed.py"), "--quick", "--out", str(out)],
                   check=True, cwd=REPO, env=env, capture_output=True, timeout=600)
    text = out.read_text()
    assert "| layer2.1.conv2 | 128x128x3x3 |" in text and "torch threads 1" in text and "| tucker2 |" in text
