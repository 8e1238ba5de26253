"""Failures that used to end in a raw traceback are one line on stderr with an exit code.

Unwritable outputs of every writer, ``torchscript --mode script`` of a model with non-tensor outputs,
a closed pipe (``automtd inspect ... | head``), random bytes given as a checkpoint, an unexpected exception
(the last line of defence names ``--debug``) and torch's "No CUDA runtime is found" log line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from automtd.baselines import run_baseline
from automtd.checkpoints import save_checkpoint
from automtd.cli.main import main
from automtd.models import get_model
from automtd.search import create_or_load_study, open_storage

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("a file where a folder is expected")
    return tmp_path


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, *needles: str) -> str:
    got = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert got == code, (got, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def _nothing_left(cwd: Path, *names: str) -> None:
    left = sorted(p.name for p in cwd.iterdir() if not p.name.startswith("s.db-"))  # SQLite's -wal/-shm files
    assert left == sorted(["file", *names]), "a partial or temporary output was left"


@pytest.fixture()
def study(cwd: Path) -> str:
    """A study holding one COMPLETE trial with a plan (as a search leaves it)."""
    url = "sqlite:///s.db"
    plan = run_baseline("uniform", get_model("cifar_resnet20"), {"method": "tucker2", "fraction": 0.3},
                        architecture="cifar_resnet20")
    s, _ = create_or_load_study(open_storage(url, create_schema=True), "s", spec={"objective": "test"},
                                directions=["maximize", "maximize"], budget=1)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        s.set_metric_names(["accuracy", "params_ratio"])
    s.add_trial(optuna.trial.create_trial(values=[90.0, plan.params_ratio], user_attrs={"plan": plan.to_dict()}))
    return url


@pytest.mark.parametrize("command", ["front", "export"])
def test_unwritable_study_outputs(study: str, cwd: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    if command == "front":
        argv = ["front", "--study", "s", "--storage", study, "--plot", "file/front.png"]
    else:
        argv = ["export", "--study", "s", "--storage", study, "--trial", "0", "-o", "file/plan.yaml"]
    capsys.readouterr()
    got = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert got == 1 and len(err) == 1, err
    assert "cannot write output 'file/" in err[0] and "choose a writable location" in err[0]
    _nothing_left(cwd, "s.db")


def test_front_says_what_accuracy_is_measured_on_and_what_to_run_next(
    study: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["front", "--study", "s", "--storage", study]) == 0
    out = capsys.readouterr().out
    assert "accuracy: top-1 % on" in out and "selected on these images" in out
    assert f"automtd export --study s --storage {study} --trial 0 -o plan.yaml" in out
    assert "automtd apply --plan plan.yaml" in out


def test_unwritable_plan_and_apply_outputs(
    cwd: Path, capsys: pytest.CaptureFixture[str], resnet20_checkpoint: Path
) -> None:
    plan = ["plan", "--model", "cifar_resnet20", "--baseline", "uniform", "--method", "tucker2", "--fraction", "0.3"]
    _fails(capsys, [*plan, "-o", "file/plan.yaml"], 1, "cannot write output 'file/plan.yaml'",
           "'file' is a file, not a folder")
    _nothing_left(cwd)
    assert main([*plan, "-o", "p.yaml"]) == 0
    capsys.readouterr()
    _fails(capsys, ["apply", "--plan", "p.yaml", "--checkpoint", str(resnet20_checkpoint), "--no-bn-recalibration",
                    "--calibrate", "0", "-o", "file/out"], 1, "cannot write output 'file/out'")  # fmt: skip
    _nothing_left(cwd, "p.yaml")


def test_torchscript_unwritable_and_non_tensor_outputs(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kwargs = {"num_classes": 10, "aux_logits": False, "init_weights": False}
    net = get_model("torchvision:googlenet", **kwargs)
    save_checkpoint(cwd / "g", net, architecture="torchvision:googlenet", arch_kwargs=kwargs, input_size=(3, 64, 64))
    # scripted GoogLeNet returns its GoogLeNetOutputs namedtuple even in eval mode
    _fails(capsys, ["torchscript", "--checkpoint", "g", "--mode", "script", "-o", "g.pt"], 1,
           "returns GoogLeNetOutputs, not one tensor", "--mode trace")  # fmt: skip
    _nothing_left(cwd, "g")
    _fails(capsys, ["torchscript", "--checkpoint", "g", "-o", "file/g.pt"], 1, "cannot write output 'file/g.pt'")
    _nothing_left(cwd, "g")


def test_random_bytes_are_not_a_checkpoint(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "random.th").write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    line = _fails(capsys, ["evaluate", "--model", "cifar_resnet20", "--checkpoint", "random.th"], 5,
                  "'random.th' is not a checkpoint")  # fmt: skip
    assert "for safety" not in line
    (cwd / "bad_pickle.th").write_bytes(b"\x80\x02 not really a pickle")
    line = _fails(capsys, ["evaluate", "--model", "cifar_resnet20", "--checkpoint", "bad_pickle.th"], 5,
                  "is not a checkpoint")  # fmt: skip
    assert "for safety" not in line


def test_unexpected_exception_is_one_line_naming_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import automtd.cli._models as models_cli

    def boom(args: object) -> int:
        raise RuntimeError("something nobody foresaw\nover two lines")

    monkeypatch.setattr(models_cli, "run", boom)
    line = _fails(capsys, ["models"], 1, "unexpected RuntimeError: something nobody foresaw over two lines", "--debug")
    assert "Traceback" not in line
    with pytest.raises(RuntimeError):
        main(["--debug", "models"])


def _python(code: str, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_closed_pipe_is_no_traceback() -> None:
    # the reader goes away before the command prints, as `automtd inspect --model X | head -1` does
    proc = _python("import sys; from automtd.cli.main import main; "
                   "sys.exit(main(['inspect', '--model', 'cifar_resnet20']))")
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_no_cuda_runtime_line_from_torch(tmp_path: Path) -> None:
    # torch.utils.cpp_extension logs "No CUDA runtime is found" on import when it finds a CUDA_HOME but no GPU
    code = (
        "import sys\n"
        "import automtd.cli._models as m\n"
        "from automtd.cli.main import main\n"
        "run = m.run\n"
        "def patched(args):\n"
        "    import torch.utils.cpp_extension\n"
        "    return run(args)\n"
        "m.run = patched\n"
        "sys.exit(main(['models']))\n"
    )
    proc = _python(code, CUDA_HOME=str(tmp_path))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"cifar_resnet20" in out and b"No CUDA runtime" not in err, err.decode()


def test_front_of_a_negative_rung_is_a_one_line_error(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["front", "--study", "s", "--storage", study, "--fidelity", "-1"], 2,
           "fidelity -1 is invalid; give a rung >= 0")
    assert main(["front", "--study", "s", "--storage", study, "--fidelity", "0"]) == 0
