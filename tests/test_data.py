"""Datasets: the data root, CIFAR-10 (shared copy), the seeded val split, subsets, augmentation, loaders."""

from __future__ import annotations

import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from automtd import DataError
from automtd.data import (
    TensorImageDataset,
    balanced_subset,
    cifar10_md5_status,
    get_dataset,
    make_loader,
    resolve_data,
    resolve_data_root,
    sample_seeds,
    split_indices,
)
from automtd.models import IMAGENET_MEAN, IMAGENET_STD
from automtd.utils import KNOWN_FILES, KnownFile, sha256_of

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def test_data_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOMTD_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root(str(tmp_path / ".")) == tmp_path  # config value wins


def test_missing_data_root_messages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUTOMTD_DATA", raising=False)
    with pytest.raises(DataError, match=r"no data root: .*AUTOMTD_DATA is not set; set data.root or export"):
        resolve_data_root(None)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=rf"data root '{missing}' \(from the config/--data-root\) does not exist"):
        resolve_data_root(missing)
    monkeypatch.setenv("AUTOMTD_DATA", str(missing))
    with pytest.raises(DataError, match=rf"data root '{missing}' \(from AUTOMTD_DATA\) does not exist"):
        get_dataset("cifar10", "test", **NORM)


def test_missing_cifar_folder_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10 folder '.*cifar-10-batches-py' does not exist; .*download: true"):
        get_dataset("cifar10", "test", root=tmp_path, **NORM)


def test_cifar_download_is_the_checksummed_fetch_and_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a file:// archive stands in for the official one: the real fetch + extract path, no network
    archive = tmp_path / "src" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    (tmp_path / "src" / "cifar-10-batches-py").mkdir()
    (tmp_path / "src" / "cifar-10-batches-py" / "readme.html").write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    known = KnownFile(archive.as_uri(), sha256_of(archive), "cifar-10-python.tar.gz")
    monkeypatch.setitem(KNOWN_FILES, "cifar10", known)
    monkeypatch.setenv("AUTOMTD_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_data(str(empty), "cifar10") == empty  # not asked: nothing fetched
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match="cifar10 folder .* does not exist"):
        get_dataset("cifar10", "test", root=empty, **NORM)
    assert not (tmp_path / "cache").exists()
    got = resolve_data(str(empty), "cifar10", download=True)
    assert got == tmp_path / "cache" / "data" and (got / "cifar-10-batches-py" / "readme.html").is_file()
    monkeypatch.setitem(KNOWN_FILES, "cifar10", KnownFile(archive.as_uri(), "0" * 64, known.filename))
    assert resolve_data(str(empty), "cifar10", download=True) == got  # extracted once, not fetched again
    assert resolve_data(str(empty), "digits", download=True) == empty  # only CIFAR archives are known


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'; allowed: cifar10, cifar100, digits, imagefolder"):
        get_dataset("mnist", "train", **NORM)
    with pytest.raises(DataError, match=r"unknown split 'valid'; allowed: train, val, test"):
        get_dataset("digits", "valid", **NORM)


def test_cifar10_shared_copy_loads(data_root: Path) -> None:
    train = get_dataset("cifar10", "train", root=data_root, **NORM)
    val = get_dataset("cifar10", "val", root=data_root, **NORM)
    test = get_dataset("cifar10", "test", root=data_root, **NORM)
    assert (len(train), len(val), len(test)) == (45_000, 5_000, 10_000)
    assert isinstance(test, TensorImageDataset) and test.images.dtype == torch.uint8
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"
    # normalisation: a stored uint8 pixel maps to (v/255 - mean)/std
    x, y = test[0]
    raw = test.images[test.indices[0]].float() / 255
    expected = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert x.shape == (3, 32, 32) and torch.allclose(x, expected) and y == int(test.targets[0])


def test_cifar10_md5_status_of_shared_copy(data_root: Path) -> None:
    assert cifar10_md5_status(data_root / "cifar-10-batches-py") == "shared-copy"


def test_corrupt_cifar_batch_is_data_error(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in (data_root / "cifar-10-batches-py").iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "test_batch").unlink()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((5, 7), np.uint8), "labels": [0] * 5}))
    with pytest.raises(DataError, match=r"'data' is not a uint8 \[N, 3072\] array"):
        get_dataset("cifar10", "test", root=tmp_path, **NORM)


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch pwned",))


def test_dataset_pickle_naming_code_is_refused_not_run(data_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in (data_root / "cifar-10-batches-py").iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "test_batch").unlink()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Exploit(), "labels": [0]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"cannot be read .*system is not allowed in a dataset file"):
        get_dataset("cifar10", "test", root=tmp_path, **NORM)
    assert not (tmp_path / "pwned").exists()


def test_val_split_disjoint_and_stable(data_root: Path) -> None:
    a_train = get_dataset("cifar10", "train", root=data_root, **NORM)
    a_val = get_dataset("cifar10", "val", root=data_root, **NORM)
    b_val = get_dataset("cifar10", "val", root=data_root, **NORM)
    tr, va = set(a_train.indices.tolist()), set(a_val.indices.tolist())
    assert not tr & va and len(tr | va) == 50_000
    assert torch.equal(a_val.indices, b_val.indices)
    other = get_dataset("cifar10", "val", root=data_root, seed=1, **NORM)
    assert not torch.equal(a_val.indices, other.indices)


def test_split_indices_is_pinned() -> None:
    # numpy default_rng(0) permutation: fixed across machines; pin a few values so a change is noticed
    train, val = split_indices(20, 5, seed=0)
    assert val.tolist() == sorted(np.random.default_rng(0).permutation(20)[:5].tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(20))
    with pytest.raises(DataError, match="val_size=20 is invalid for a training set of 20 images"):
        split_indices(20, 20)


def test_balanced_subsets(data_root: Path) -> None:
    a = get_dataset("cifar10", "val", root=data_root, subset=500, **NORM)
    b = get_dataset("cifar10", "val", root=data_root, subset=500, **NORM)
    assert len(a) == 500 and torch.equal(a.indices, b.indices)
    assert torch.bincount(a.targets, minlength=10).tolist() == [50] * 10
    assert set(a.indices.tolist()) <= set(get_dataset("cifar10", "val", root=data_root, **NORM).indices.tolist())
    with pytest.raises(DataError, match="subset=20000 is invalid for a split of 10000 images"):
        get_dataset("cifar10", "test", root=data_root, subset=20_000, **NORM)
    labels = torch.tensor([0] * 90 + [1] * 10)
    pick = balanced_subset(torch.arange(100), labels, 20)
    assert torch.bincount(labels[pick]).tolist() == [10, 10]


def test_augmentation_is_random_crop_and_flip(data_root: Path) -> None:
    ds = get_dataset("cifar10", "train", root=data_root, subset=64, train_transform=True, **NORM)
    plain = get_dataset("cifar10", "train", root=data_root, subset=64, **NORM)
    torch.manual_seed(0)
    x1, y1 = ds.batch(list(range(64)))
    x2, _ = ds.batch(list(range(64)))
    ref, yr = plain.batch(list(range(64)))
    assert x1.shape == ref.shape == (64, 3, 32, 32) and torch.equal(y1, yr)
    assert not torch.equal(x1, x2) and not torch.equal(x1, ref)
    torch.manual_seed(0)
    again, _ = ds.batch(list(range(64)))
    assert torch.equal(again, x1)  # seeded
    # every augmented image is a shifted (and maybe flipped) window of the zero-padded original
    zero = ((torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1)
    padded = torch.nn.functional.pad(ref - zero, (4, 4, 4, 4)) + zero
    for i in range(8):
        windows = padded[i].unfold(1, 32, 1).unfold(2, 32, 1)  # [3, 9, 9, 32, 32]
        hit = any(
            torch.allclose(windows[:, oy, ox], img, atol=1e-6)
            for oy in range(9)
            for ox in range(9)
            for img in (x1[i], x1[i].flip(-1))
        )
        assert hit


def test_loader_is_seeded(data_root: Path) -> None:
    ds = get_dataset("cifar10", "val", root=data_root, subset=200, **NORM)
    order = [torch.cat([y for _, y in make_loader(ds, batch_size=50, shuffle=True, seed=3)]) for _ in range(2)]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], ds.targets)
    x, y = next(iter(make_loader(ds, batch_size=64, shuffle=False)))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(DataError, match="batch_size=0 is invalid"):
        make_loader(ds, batch_size=0, shuffle=False)


def test_digits_offline() -> None:
    train = get_dataset("digits", "train", **NORM)
    val = get_dataset("digits", "val", **NORM)
    test = get_dataset("digits", "test", **NORM)
    assert (len(train), len(val), len(test)) == (1137, 300, 360)
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    x, y = train[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    assert torch.bincount(get_dataset("digits", "train", subset=50, **NORM).targets).tolist() == [5] * 10


def test_imagefolder(data_root: Path, tmp_path: Path) -> None:
    from PIL import Image

    src = get_dataset("cifar10", "test", root=data_root, subset=40, **NORM)
    for split in ("train", "val"):
        for k, i in enumerate(src.indices.tolist()):
            label = src.classes[int(src.labels[i])]
            (tmp_path / split / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(src.images[i].permute(1, 2, 0).numpy()).save(tmp_path / split / label / f"{k}.png")
    train = get_dataset("imagefolder", "train", root=tmp_path, val_size=10, image_size=32, **NORM)
    val = get_dataset("imagefolder", "val", root=tmp_path, val_size=10, image_size=32, **NORM)
    test = get_dataset("imagefolder", "test", root=tmp_path, image_size=32, val_size=10, **NORM)
    assert (len(train), len(val), len(test)) == (30, 10, 40)
    x, y = next(iter(make_loader(test, batch_size=8, shuffle=False)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    with pytest.raises(DataError, match="must hold train/ and val/"):
        get_dataset("imagefolder", "test", root=tmp_path / "train", **NORM)


def _is_crop_or_flip(img: torch.Tensor, original: torch.Tensor) -> bool:
    """Whether ``img`` is a 32x32 window (maybe flipped) of ``original`` zero-padded by 4 (both normalised)."""
    zero = ((torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(3, 1, 1)
    windows = (torch.nn.functional.pad(original - zero, (4, 4, 4, 4)) + zero).unfold(1, 32, 1).unfold(2, 32, 1)
    return any(torch.allclose(windows[:, oy, ox], cand, atol=1e-6)
               for oy in range(9) for ox in range(9) for cand in (img, img.flip(-1)))


def test_seeded_augmentation_depends_only_on_epoch_seed_and_image(data_root: Path) -> None:
    ds = get_dataset("cifar10", "train", root=data_root, subset=64, train_transform=True, **NORM)
    plain = get_dataset("cifar10", "train", root=data_root, subset=64, **NORM)
    a, ya = ds.batch(list(range(64)), epoch_seed=11)
    torch.manual_seed(123)  # the global generator plays no part
    b, yb = ds.batch(list(range(63, -1, -1)), epoch_seed=11)  # the same images in another order and batch
    assert torch.equal(a, b.flip(0)) and torch.equal(ya, yb.flip(0))
    other, _ = ds.batch(list(range(64)), epoch_seed=12)
    assert not torch.equal(a, other)
    ref, _ = plain.batch(list(range(64)))
    assert not torch.equal(a, ref)
    assert all(_is_crop_or_flip(a[i], ref[i]) for i in range(16))
    seeds = sample_seeds(torch.arange(5000), 11)
    offsets = torch.stack([seeds % 9, (seeds // 9) % 9, (seeds // 81) % 2], 1)
    assert len({tuple(r) for r in offsets.tolist()}) == 9 * 9 * 2  # every crop and flip occurs


def test_batched_loader_gives_the_per_image_loader_tensors(data_root: Path) -> None:
    # without augmentation the two paths are the same tensors; with it, the same images cropped and flipped
    plain = get_dataset("cifar10", "val", root=data_root, subset=100, **NORM)
    old = list(make_loader(plain, batch_size=32, shuffle=False, batched=False))
    new = list(make_loader(plain, batch_size=32, shuffle=False))
    assert len(old) == len(new) == 4
    for (xo, yo), (xn, yn) in zip(old, new, strict=True):
        assert torch.equal(xo, xn) and torch.equal(yo, yn)
    aug = get_dataset("cifar10", "val", root=data_root, subset=100, train_transform=True, **NORM)
    loader = make_loader(aug, batch_size=32, shuffle=True, seed=5, keys=True)
    first = list(loader)
    assert [len(b) for b in first] == [3, 3, 3, 3] and len(loader) == 4
    x, y, keys = first[0]
    assert keys.shape == (32, 2) and torch.equal(aug.labels[keys[:, 0]], y)
    assert int(keys[:, 1].unique().numel()) == 1  # one epoch seed per pass
    rows = {int(r): i for i, r in enumerate(aug.indices)}
    for i in range(8):
        assert _is_crop_or_flip(x[i], plain.batch([rows[int(keys[i, 0])]])[0][0])
    second = list(loader)
    assert not torch.equal(second[0][2], keys)  # a new pass: a new order and epoch seed
    loader.generator.manual_seed(5)  # what train.fit does: the same batches with the same augmentation again
    replay = list(loader)
    assert all(torch.equal(p, q) for b1, b2 in zip(first, replay, strict=True) for p, q in zip(b1, b2, strict=True))


def _toy_factory(split: str, *, root: object, train_transform: bool, mean: list[float], std: list[float],
                 image_size: int) -> torch.utils.data.Dataset[tuple[torch.Tensor, int]]:
    n = {"train": 10, "val": 4, "test": 6}[split]
    return torch.utils.data.TensorDataset(torch.full((n, 3, image_size, image_size), float(len(mean))),
                                          torch.arange(n) % 2)


def test_a_registered_dataset_is_a_dataset_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import automtd.data as data_pkg

    monkeypatch.setattr(sys.modules["automtd.data._custom"], "_FACTORIES", {})
    data_pkg.register_dataset("toy", _toy_factory)
    ds = data_pkg.get_dataset("toy", "train", mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=8, subset=3, seed=1)
    assert len(ds) == 3 and ds[0][0].shape == (3, 8, 8) and float(ds[0][0][0, 0, 0]) == 3.0
    assert len(data_pkg.get_dataset("toy", "test", mean=IMAGENET_MEAN, std=IMAGENET_STD)) == 6
    assert data_pkg.registered_datasets() == ["toy"]
    for bad in ("toy", "cifar10", "a:b"):
        with pytest.raises(DataError, match="is taken or invalid"):
            data_pkg.register_dataset(bad, _toy_factory)


def test_a_dataset_factory_in_user_code_is_imported_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import automtd.models as models_pkg
    from automtd import ConfigError

    (tmp_path / "mydata.py").write_text(
        "import torch\n\n\ndef make(split, **kw):\n"
        "    return torch.utils.data.TensorDataset(torch.zeros(5, 3, 4, 4), torch.zeros(5, dtype=torch.long))\n"
        "\n\ndef broken(split):\n    return []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules["automtd.models._import"], "_TRUSTED", set())
    monkeypatch.delenv("AUTOMTD_PLUGINS", raising=False)
    with pytest.raises(ConfigError, match="data.dataset 'mydata:make' names user code 'mydata:make'; pass"):
        get_dataset("mydata:make", "train", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    models_pkg.trust_user_model("mydata:make")
    assert len(get_dataset("mydata:make", "train", mean=IMAGENET_MEAN, std=IMAGENET_STD)) == 5
    with pytest.raises(DataError, match="does not take .split, root=, train_transform="):
        get_dataset("mydata:broken", "train", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def test_an_image_folder_carves_a_tenth_of_train_for_val_by_default(tmp_path: Path) -> None:
    from PIL import Image

    for split, n in (("train", 20), ("val", 2)):
        for c in range(2):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 12), (i * 10, c * 100, 0)).save(tmp_path / split / f"c{c}" / f"{i}.png")
    common = {"root": tmp_path, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "image_size": 8}
    val = get_dataset("imagefolder", "val", **common)
    assert len(val) == 4 and len(get_dataset("imagefolder", "train", **common)) == 36
    assert val[0][0].shape == (3, 8, 8)
