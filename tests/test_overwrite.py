"""No command overwrites an existing output unless --force, and a failed write leaves no partial target.

``apply -o``, ``plan -o``, ``export -o``, ``torchscript -o`` and ``front --plot`` all go through
``automtd.utils.atomic_output``: the existing target is checked before any work, the output is written to a
hidden sibling and renamed into place, so a failure (or Ctrl-C) never leaves a half-written target.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from automtd import AutomtdError, ConfigError
from automtd.cli.main import main
from automtd.utils import atomic_output, check_output


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


PLAN = ["plan", "--model", "cifar_resnet20", "--baseline", "uniform", "--method", "tucker2", "--fraction", "0.3"]


def test_plan_refuses_an_existing_file_then_force_replaces_it(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "plan.yaml").write_text("mine\n")
    assert main([*PLAN, "-o", "plan.yaml"]) == 2
    line = _one_error(capsys)
    assert "'plan.yaml'" in line and "already exists" in line and "--force" in line
    assert (cwd / "plan.yaml").read_text() == "mine\n"
    assert main([*PLAN, "-o", "plan.yaml", "--force"]) == 0
    assert "architecture:" in (cwd / "plan.yaml").read_text()
    assert sorted(p.name for p in cwd.iterdir()) == ["plan.yaml"]  # no temporary sibling left


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--study", "s", "--storage", "sqlite:///nope.db", "--trial", "0", "-o", "taken"],
        ["front", "--study", "s", "--storage", "sqlite:///nope.db", "--plot", "taken"],
        ["torchscript", "--checkpoint", "nope/", "-o", "taken"],
        ["apply", "--plan", "p.yaml", "--checkpoint", "nope.th", "-o", "taken"],
    ],
    ids=["export", "front-plot", "torchscript", "apply"],
)
def test_every_writer_refuses_an_existing_file_before_any_work(
    cwd: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    (cwd / "taken").write_text("keep me")
    if argv[0] == "apply":
        assert main([*PLAN, "-o", "p.yaml"]) == 0
        capsys.readouterr()
    assert main(argv) == 2  # not 5 (missing checkpoint) or 7 (missing storage): the target is checked first
    line = _one_error(capsys)
    assert "'taken'" in line and "already exists" in line and "--force" in line
    assert (cwd / "taken").read_text() == "keep me" and not (cwd / "nope.db").exists()


def test_apply_refuses_a_non_empty_folder_and_an_earlier_model(
    cwd: Path, capsys: pytest.CaptureFixture[str], resnet20_checkpoint: Path
) -> None:
    assert main([*PLAN, "-o", "p.yaml"]) == 0
    apply = ["apply", "--plan", "p.yaml", "--checkpoint", str(resnet20_checkpoint), "--no-bn-recalibration"]
    (cwd / "photos").mkdir()
    (cwd / "photos" / "cat.jpg").write_bytes(b"x")
    assert main([*apply, "-o", "photos"]) == 2
    assert "not empty" in _one_error(capsys)
    assert sorted(p.name for p in (cwd / "photos").iterdir()) == ["cat.jpg"]
    (cwd / "empty").mkdir()
    assert main([*apply, "-o", "empty"]) == 0  # an empty folder is fine
    first = (cwd / "empty" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*apply, "-o", "empty", "--seed", "1"]) == 2  # the compressed model of a moment ago is kept
    assert "--force" in _one_error(capsys)
    assert (cwd / "empty" / "model.safetensors").read_bytes() == first
    assert main([*apply, "-o", "photos", "--force"]) == 0  # replaced as a whole, not written into
    assert sorted(p.name for p in (cwd / "photos").iterdir()) == ["meta.json", "model.safetensors"]
    assert not [p for p in cwd.iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "out.yaml"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target, force=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.yaml"]
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "model.safetensors").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output(folder, force=True, directory=True) as tmp:
        (tmp / "model.safetensors").write_text("half")
        raise KeyboardInterrupt
    assert (folder / "model.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "out.yaml"]
    with atomic_output(folder, force=True, directory=True) as tmp:
        (tmp / "meta.json").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "out.yaml"]


def test_writer_errors_name_the_target_not_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    with pytest.raises(ConfigError) as info, atomic_output(target) as tmp:
        raise ConfigError(f"plan file {str(tmp)!r} is bad; fix it")
    assert str(info.value) == f"plan file {str(target)!r} is bad; fix it"


def test_unwritable_location_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(AutomtdError, match=r"cannot write output .*file/out\.yaml.*choose a writable location"):
        with atomic_output(tmp_path / "file" / "out.yaml"):
            pass
    assert check_output(tmp_path / "new.yaml") == tmp_path / "new.yaml"
