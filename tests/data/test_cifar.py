"""CIFAR DataModules on torchvision's on-disk format (pickled batches) written to a temp dir."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from vitlab.data.cifar import CIFARDataModule

SMALL = {"img_size": 32, "batch_size": 4, "num_workers": 0, "mix": None}


def write_batch(path: Path, labels_key: str, size: int, num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        "data": rng.integers(0, 256, (size, 3 * 32 * 32), dtype=np.uint8),
        labels_key: [int(label) for label in rng.integers(0, num_classes, size)],
    }
    path.write_bytes(pickle.dumps(batch))


def write_cifar10(root: Path, per_batch: int = 8) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for seed, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        write_batch(folder / name, "labels", per_batch, 10, seed)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def write_cifar100(root: Path, size: int = 16) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    write_batch(folder / "train", "fine_labels", size, 100, 0)
    write_batch(folder / "test", "fine_labels", size, 100, 1)
    names = [f"class{k}" for k in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))


def test_cifar10_loads_the_pickled_batches(tmp_path: Path):
    write_cifar10(tmp_path)
    datamodule = CIFARDataModule(tmp_path, num_classes=10, **SMALL)
    datamodule.setup()
    assert len(datamodule.splits["train"]) == 40 and len(datamodule.splits["test"]) == 8
    assert datamodule.splits["val"] is datamodule.splits["test"]
    assert datamodule.class_names[0] == "airplane"
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.max() < 10


def test_cifar100_val_is_carved_from_train(tmp_path: Path):
    write_cifar100(tmp_path)
    datamodule = CIFARDataModule(tmp_path, num_classes=100, val_fraction=0.25, **SMALL)
    datamodule.setup()
    assert len(datamodule.splits["train"]) == 12 and len(datamodule.splits["val"]) == 4
    assert datamodule.class_names[-1] == "class99"
    images, labels = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 3, 32, 32)


def test_missing_files_say_where_to_put_them_at_setup(tmp_path: Path):
    datamodule = CIFARDataModule(tmp_path, num_classes=10, **SMALL)  # reads no file
    with pytest.raises(
        FileNotFoundError, match=r"cifar-10-batches-py.*data.download=true"
    ) as error:
        datamodule.setup()
    assert "data_batch_1" in str(error.value) and "cs.toronto.edu" in str(error.value)


def test_only_10_or_100_classes(tmp_path: Path):
    with pytest.raises(ValueError, match="10 or 100"):
        CIFARDataModule(tmp_path, num_classes=20, **SMALL)
