"""Latency targets on a device: ``cpu`` (keys and files as before) or ``cuda`` (torch on the GPU, ONNX Runtime's
CUDA provider), refused with one line where this machine cannot measure them (no GPU, a CPU-only onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.cli.main import main
from automtd.deploy import ort_providers, ort_session
from automtd.latency import (
    LatencyTable,
    LatencyTarget,
    build_latency_table,
    load_latency_table,
    read_table_file,
    runnable,
    write_table_file,
)
from automtd.plan import decomposable_layers
from automtd.search import load_search_config
from automtd.search._latency import study_table

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "configs" / "gpu" / "latency_resnet56_cuda.yaml"
SIZE = (3, 32, 32)
NO_GPU = "latency device 'cuda' needs a CUDA GPU; none is visible here; use device: cpu or run on a GPU machine"


@pytest.fixture()
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _round_trip(target: LatencyTarget) -> LatencyTarget:
    return LatencyTable.from_dict(LatencyTable(target).to_dict(), source="test").target


def test_a_cpu_target_keeps_its_key_and_an_old_entry_without_device_loads_as_cpu() -> None:
    cpu = LatencyTarget("onnxruntime", 1, 1, SIZE, machine="test cpu")
    assert cpu.device == "cpu"
    assert cpu.key() == "onnxruntime threads=1 batch=1 input=3x32x32 on test cpu"  # tables built before stay valid
    assert cpu.to_dict()["device"] == "cpu" and _round_trip(cpu) == cpu
    old = {"target": {"runtime": "onnxruntime", "threads": 1, "batch": 1, "input_size": [3, 32, 32],
                      "machine": "test cpu"}}
    loaded = LatencyTable.from_dict(old, source="old table").target
    assert loaded == cpu and loaded.key() == cpu.key()


def test_a_cuda_target_has_its_device_in_the_key_and_round_trips_without_a_gpu(no_cuda: None) -> None:
    cuda = LatencyTarget("torch", 2, 64, SIZE, machine="NVIDIA A100 (CUDA 12.1)", device="cuda")
    assert cuda.key() == "torch device=cuda threads=2 batch=64 input=3x32x32 on NVIDIA A100 (CUDA 12.1)"
    assert cuda.to_dict()["device"] == "cuda"
    assert _round_trip(cuda) == cuda  # a CPU worker reads a table a GPU measured


def test_an_unknown_device_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^latency device 'gpu' is not allowed; use one of cpu, cuda$"):
        LatencyTarget("torch", 1, 1, SIZE, machine="m", device="gpu")  # type: ignore[arg-type]
    entry = {"target": {"runtime": "torch", "threads": 1, "batch": 1, "input_size": [3, 32, 32], "machine": "m",
                        "device": "gpu"}}
    with pytest.raises(ConfigError, match="latency device 'gpu' is not allowed"):  # not "malformed"
        LatencyTable.from_dict(entry, source="t")


def test_the_table_of_the_asked_device_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    for device in ("cpu", "cuda"):
        write_table_file(path, LatencyTable(LatencyTarget("onnxruntime", 1, 64, SIZE, machine=device, device=device)))
    assert len(read_table_file(path)) == 2
    for device in ("cpu", "cuda"):
        found = load_latency_table(path, runtime="onnxruntime", batch=64, threads=1, device=device)
        assert found.target.device == device and found.target.machine == device
    assert load_latency_table(path, runtime="onnxruntime", batch=64, threads=1).target.device == "cpu"


def test_measuring_on_cuda_without_a_gpu_is_refused_up_front(tmp_path: Path, no_cuda: None) -> None:
    with pytest.raises(ConfigError, match=f"^{NO_GPU}$"):
        LatencyTarget("torch", 1, 64, SIZE, device="cuda")  # this machine's GPU name is asked for
    target = LatencyTarget("onnxruntime", 1, 64, SIZE, machine="some GPU", device="cuda")
    with pytest.raises(ConfigError, match=f"^{NO_GPU}$"):
        runnable(nn.Conv2d(3, 8, 3), torch.randn(1, *SIZE), target)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    layers = decomposable_layers(model, SIZE)
    with pytest.raises(ConfigError, match=f"^{NO_GPU}$"):
        build_latency_table(tmp_path / "t.json", model, architecture="m", layers=layers, target=target,  # type: ignore[arg-type]
                            fraction_low=0.2, fraction_high=0.8)
    assert not (tmp_path / "t.json").exists()  # nothing written


def test_ort_session_on_cuda_needs_the_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    assert ort_providers() == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()  # the CPU build of this venv
    with pytest.raises(ConfigError, match=r"needs the CUDAExecutionProvider; .*; pip install onnxruntime-gpu$"):
        ort_session(b"not read", device="cuda")
    with pytest.raises(ConfigError, match="ONNX Runtime device 'gpu' is not allowed; use cpu or cuda"):
        ort_providers("gpu")
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: both)
    assert ort_providers("cuda") == both


def test_the_latency_section_takes_a_device() -> None:
    config = load_search_config(GPU_CONFIG)
    assert config.latency.device == "cuda" and config.latency.batch == 64
    assert load_search_config(GPU_CONFIG, ["latency.device=cpu"]).latency.device == "cpu"
    with pytest.raises(ConfigError, match="gpu"):
        load_search_config(GPU_CONFIG, ["latency.device=gpu"])


def test_a_search_timing_on_cuda_without_a_gpu_is_refused(no_cuda: None) -> None:
    # without a table the alds-latency seeds cannot be allocated either: the config drops them with it
    config = load_search_config(GPU_CONFIG, ["latency.table=null", "warmstart.baselines=[alds, ht2-energy, uniform]"])
    assert config.latency.table is None
    with pytest.raises(ConfigError, match=f"^{NO_GPU}$"):
        study_table(config, None)  # type: ignore[arg-type]  # refused before the plan is looked at


def test_the_cli_refuses_device_cuda_without_a_gpu_in_one_line(
    tmp_path: Path, no_cuda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.json"
    code = main(["latency-table", str(GPU_CONFIG), "--device", "cuda", "--runtime", "torch", "--batch", "64",
                 "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ConfigError.exit_code
    assert err == [f"error: {NO_GPU}"]
    assert not out.exists()
