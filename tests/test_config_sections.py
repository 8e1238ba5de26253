"""The sections shared by search, train, funnel and apply: one spelling, old spellings, paths, defaults."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from automtd._errors import ConfigError
from automtd.config import DataSection, FinetuneSection, ModelSection, parse_config
from automtd.search import load_search_config
from automtd.train import TrainConfig
from automtd.workflows import load_funnel_config, load_train_config

SEARCH = "model:\n  name: cifar_resnet20\n  checkpoint: /nowhere/resnet20.th\n"
TRAIN = "model: {name: cifar_resnet20}\ntrain: {epochs: 1}\noutput: runs/x\n"
FUNNEL = "model: {name: cifar_resnet20, checkpoint: /nowhere/resnet20.th}\noutput: runs/f\n"


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_data_section_is_spelled_the_same_in_every_command(tmp_path: Path) -> None:
    data = "data: {dataset: digits, train_subset: 64, val_subset: 32, batch_size: 16}\n"
    search = load_search_config(_write(tmp_path, SEARCH + data))
    train = load_train_config(_write(tmp_path, TRAIN + data))
    funnel = load_funnel_config(_write(tmp_path, FUNNEL + data.replace("val_subset", "eval_subset")))
    for d in (search.data, train.data, funnel.data):
        assert (d.dataset, d.train_subset, d.batch_size) == ("digits", 64, 16)
    assert search.data.val_size == 5000 and train.data.val_size is None  # search carves 5000 by default


def test_old_spellings_load_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match=r"data\.name is deprecated; write data\.dataset"):
        cfg = load_train_config(_write(tmp_path, TRAIN + "data: {name: digits, subset: 10}\n"))
    assert (cfg.data.dataset, cfg.data.train_subset) == ("digits", 10)
    with pytest.warns(FutureWarning, match="distill is deprecated; write finetune.kd"):
        funnel = load_funnel_config(_write(tmp_path, FUNNEL + "distill: true\n"))
    assert funnel.finetune.kd and funnel.finetune.epochs == 1 and funnel.finetune.lr == 0.001
    with pytest.raises(ConfigError, match="give data.dataset only"):
        parse_config({"name": "digits", "dataset": "cifar10"}, DataSection)


def test_unknown_and_removed_keys_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'debug'") as err:
        load_search_config(_write(tmp_path, SEARCH + "debug:\n  nan_trials: [1]\n"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"unknown key 'finetune.early_stop'"):
        load_funnel_config(_write(tmp_path, FUNNEL + "finetune: {early_stop: {enabled: false}}\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'data.sz'"):
        load_train_config(_write(tmp_path, TRAIN + "data: {sz: 1}\n"))
    with pytest.raises(ConfigError, match=r"missing required key 'model.checkpoint'"):
        load_funnel_config(_write(tmp_path, "model: {name: cifar_resnet20}\noutput: runs/f\n"))


def test_paths_expand_variables_in_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMTD_TEST_DIR", "/expanded")
    monkeypatch.setenv("HOME", "/home/me")
    data = "data: {root: '${AUTOMTD_TEST_DIR}/data'}\n"
    search = load_search_config(_write(tmp_path, SEARCH.replace("/nowhere", "~/w") + data))
    train = load_train_config(_write(tmp_path, TRAIN.replace("runs/x", "${AUTOMTD_TEST_DIR:-x}/out") + data))
    funnel = load_funnel_config(_write(tmp_path, FUNNEL.replace("runs/f", "~/f") + data))
    assert search.model.checkpoint == "/home/me/w/resnet20.th"
    assert search.data.root == train.data.root == funnel.data.root == "/expanded/data"
    assert (train.output, funnel.output) == ("/expanded/out", "/home/me/f")
    # a dump (the config stored with a study) keeps the text as written, so it stays portable
    stored = search.model_dump(mode="json")
    assert stored["data"]["root"] == "${AUTOMTD_TEST_DIR}/data" and stored["model"]["checkpoint"] == "~/w/resnet20.th"
    assert copy.deepcopy(search).data.root.raw == pickle.loads(pickle.dumps(search)).data.root.raw
    monkeypatch.delenv("AUTOMTD_TEST_DIR")
    with pytest.raises(ConfigError, match=r"key 'data.root'.*export AUTOMTD_TEST_DIR"):
        load_train_config(_write(tmp_path, TRAIN + data))


def test_a_finetune_section_becomes_the_loop_settings_in_one_place() -> None:
    ft = FinetuneSection(steps=20, lr=0.002, nesterov=True, kd=False, label_smoothing=0.1)
    cfg = TrainConfig.from_finetune(ft, seed=3)
    assert (cfg.steps, cfg.epochs, cfg.lr, cfg.nesterov, cfg.seed) == (20, None, 0.002, True, 3)
    assert cfg.kd_alpha == 0.0 and cfg.label_smoothing == 0.1
    by_epochs = TrainConfig.from_finetune(FinetuneSection(epochs=0.5))
    assert (by_epochs.epochs, by_epochs.steps, by_epochs.kd_alpha) == (0.5, None, 0.9)
    assert not FinetuneSection(steps=0).enabled
    with pytest.raises(ConfigError, match="no budget"):
        TrainConfig.from_finetune(FinetuneSection(steps=0))
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"steps": 5, "epochs": 1}, FinetuneSection)


def test_funnel_finetune_defaults_apply_per_key(tmp_path: Path) -> None:
    cfg = load_funnel_config(_write(tmp_path, FUNNEL + "finetune: {steps: 7}\n"))
    ft = cfg.finetune
    assert (ft.steps, ft.epochs, ft.lr, ft.kd, ft.bn_recalibration_images) == (7, None, 0.001, False, 0)
    assert load_funnel_config(_write(tmp_path, FUNNEL)).finetune.epochs == 1


def test_model_section_input_size_defaults_per_command(tmp_path: Path) -> None:
    assert ModelSection(name="cifar_resnet20").input_size is None  # the architecture's own
    assert load_search_config(_write(tmp_path, SEARCH)).model.input_size == (3, 32, 32)
    train = load_train_config(_write(tmp_path, TRAIN + "init_checkpoint: a.th\n"))
    assert train.start_checkpoint == "a.th"
    with pytest.raises(ConfigError, match="not both"):
        load_train_config(_write(tmp_path, TRAIN.replace("}", ", checkpoint: b.th}", 1) + "init_checkpoint: a.th\n"))
