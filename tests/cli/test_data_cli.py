"""``train.py data=imagefolder|imagenet`` end to end on generated JPEG/PNG trees."""

from __future__ import annotations

from pathlib import Path

from vitlab.data.synthetic import write_image_tree

QUICK = (
    "experiment=none",
    "model=vit_digits",
    "model.img_size=32",
    "model.patch_size=8",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=none",
    "callbacks=none",
    "data.batch_size=4",
    "data.num_workers=0",
)


def damaged_tree(root: Path) -> Path:
    """3 classes of JPEG + PNG files, with a truncated JPEG and a stray text file in train."""
    written = write_image_tree(root, {"train": 4, "val": 2})
    jpeg = written[0].read_bytes()
    (root / "train" / "class_0" / "broken.JPEG").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "train" / "class_2" / "README.txt").write_text("stray")
    return root


def test_imagefolder_trains_end_to_end_with_mixing_and_a_corrupt_file(cli, tmp_path: Path):
    root = damaged_tree(tmp_path / "tree")
    # one train batch of all 13 files: the broken JPEG is drawn, skipped and named
    result = cli("train.py", "data=imagefolder", f"data.root={root}", *QUICK, "data.batch_size=13")
    assert "broken.JPEG" in result.stderr
    assert "skipped 1 non-image file" in result.stdout + result.stderr
    assert "test/acc1" in result.stdout + result.stderr


def test_imagenet_trains_end_to_end_with_repeated_augmentation(cli, tmp_path: Path):
    root = damaged_tree(tmp_path / "imagenet")
    result = cli(
        "train.py",
        "data=imagenet",
        f"data.root={root}",
        "data.num_classes=3",
        "data.fast_path=false",
        *QUICK,
    )
    assert "test/acc1" in result.stdout + result.stderr


def test_missing_data_root_names_the_expected_layout(cli, tmp_path: Path):
    result = cli(
        "train.py", "data=imagefolder", f"data.root={tmp_path / 'absent'}", *QUICK, check=False
    )
    assert result.returncode != 0
    assert f"{tmp_path / 'absent'}/train/<class>/<image>" in result.stderr
