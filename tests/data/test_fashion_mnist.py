"""data=fashion_mnist: the IDX reader (against torchvision's, on files written here), the
seeded validation carve-out, batched augmentation of training batches only, the one-line error
of a missing root, and, where Debian's dataset-fashion-mnist is installed, the real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file

from vitlab.data.fashion_mnist import DEBIAN_ROOT, FILES, read_idx
from vitlab.errors import UserError
from vitlab.run import prepare

SIZES = {"train": 40, "test": 12}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` (uint8) as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())
    return path


def write_fashion_files(root: Path, gzipped: bool = True) -> dict[str, np.ndarray]:
    """Small Fashion-MNIST files: ``SIZES`` random 28x28 images per split, labels 0..9."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    written = {}
    for split, (images_name, labels_name) in FILES.items():
        images = rng.integers(0, 256, (SIZES[split], 28, 28), dtype=np.uint8)
        labels = np.arange(SIZES[split], dtype=np.uint8) % 10
        write_idx(root / f"{images_name}{suffix}", images)
        write_idx(root / f"{labels_name}{suffix}", labels)
        written[split] = images
    return written


@pytest.fixture
def fashion(tmp_path: Path, compose_config):
    """``fashion(*overrides)``: the data=fashion_mnist DataModule over small files, set up."""
    root = tmp_path / "fashion"
    write_fashion_files(root)

    def build(*overrides: str):
        cfg = compose_config(
            "data=fashion_mnist", f"data.root={root}", "data.val_size=8", "data.batch_size=8",
            "model.img_size=28",
            *overrides,
        )  # fmt: skip
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        return datamodule

    return build


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_the_idx_reader_reads_what_torchvision_reads(tmp_path: Path, suffix: str):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    plain_images = write_idx(tmp_path / "images-idx3-ubyte", images)
    plain_labels = write_idx(tmp_path / "labels-idx1-ubyte", labels)
    ours_images = read_idx(write_idx(tmp_path / f"ours-images{suffix}", images))
    ours_labels = read_idx(write_idx(tmp_path / f"ours-labels{suffix}", labels))
    assert torch.equal(ours_images, read_image_file(str(plain_images)))
    assert torch.equal(ours_labels.long(), read_label_file(str(plain_labels)))
    assert ours_images.dtype == torch.uint8 and ours_images.shape == (5, 7, 3)


def test_a_file_that_is_not_idx_is_refused(tmp_path: Path):
    (tmp_path / "notes").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "notes")


def test_splits_are_the_official_test_and_a_seeded_carve_out_of_train(fashion, tmp_path: Path):
    datamodule = fashion()
    assert datamodule.dataset_sizes() == {"train": 32, "val": 8, "test": 12}
    train, val = datamodule.splits["train"], datamodule.splits["val"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    # train and val share no image and together are the official train file
    official = read_idx(tmp_path / "fashion" / "train-images-idx3-ubyte.gz")
    together = torch.cat([train.images, val.images]).flatten(1)
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, official.flatten(1).numpy()))
    assert torch.equal(fashion().splits["val"].images, val.images)  # the same every run
    assert not torch.equal(fashion("data.split_seed=1").splits["val"].images, val.images)


def test_plain_idx_files_are_read_as_well(tmp_path: Path, compose_config):
    root = tmp_path / "plain"
    written = write_fashion_files(root, gzipped=False)
    cfg = compose_config("data=fashion_mnist", f"data.root={root}", "data.val_size=8")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert np.array_equal(datamodule.splits["test"].images[:, 0].numpy(), written["test"])


def test_evaluation_batches_are_only_normalised_and_training_batches_augmented(fashion):
    datamodule = fashion()
    val = datamodule.splits["val"]
    batch = next(iter(datamodule.val_dataloader()))
    assert batch[0].dtype == torch.uint8
    evaluated, _ = datamodule.on_after_batch_transfer(batch, 0)  # no trainer: not training
    torch.testing.assert_close(evaluated, (val.images[:8] / 255 - 0.2860) / 0.3530)
    trained, labels = datamodule.batch_step(batch, train=True)
    assert trained.shape == evaluated.shape and torch.equal(labels, batch[1])
    assert not torch.isclose(trained, evaluated).all(dim=(1, 2, 3)).any()  # every image changed


def test_without_augment_training_batches_are_evaluation_batches(fashion):
    datamodule = fashion("data.augment=false")
    batch = next(iter(datamodule.train_dataloader()))
    trained, _ = datamodule.batch_step(batch, train=True)
    assert torch.equal(trained, datamodule.batch_step(batch, train=False)[0])


def test_predict_transform_of_an_image_file_is_its_evaluation_input(fashion, tmp_path: Path):
    datamodule = fashion("model.img_size=32")
    image = datamodule.splits["test"].images[0]
    Image.fromarray(image[0].numpy()).convert("RGB").save(tmp_path / "item.png")
    with Image.open(tmp_path / "item.png") as file:
        prepared = datamodule.predict_transform()(file)
    batch = (datamodule.splits["test"][0][0][None], torch.zeros(1))
    (expected,), _ = datamodule.on_after_batch_transfer(batch, 0)
    assert prepared.shape == (1, 32, 32)
    assert torch.equal(prepared, expected)


def test_a_missing_root_is_one_line_naming_both_ways_to_get_the_data(tmp_path, compose_config):
    cfg = compose_config("data=fashion_mnist", f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(UserError) as raised:
        prepare(instantiate(cfg.data))
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message


@pytest.mark.skipif(not DEBIAN_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_the_installed_dataset_is_the_default_root_with_its_official_splits(compose_config):
    cfg = compose_config("data=fashion_mnist", "model.img_size=28")
    assert Path(cfg.data.root) == DEBIAN_ROOT
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert datamodule.dataset_sizes() == {"train": 55000, "val": 5000, "test": 10000}
    for split in datamodule.splits.values():
        assert split.labels.unique().tolist() == list(range(10))
    assert datamodule.class_names[9] == "Ankle boot"
