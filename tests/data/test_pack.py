"""``python -m vitlab.data.pack``: a pre-resized copy that the ImageFolder DataModule reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.synthetic import write_image_tree


def test_pack_resizes_skips_bad_files_and_stays_readable(tmp_path: Path):
    source, dest = tmp_path / "source", tmp_path / "packed"
    written = write_image_tree(source, {"train": 3, "val": 1}, num_classes=2, size=(120, 90))
    (source / "train" / "class_0" / "broken.JPEG").write_bytes(written[0].read_bytes()[:200])
    (source / "train" / "class_1" / "notes.txt").write_text("stray")
    (source / "LOC_synset_mapping.txt").write_text("class_0 zero\nclass_1 one\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vitlab.data.pack",
            str(source),
            str(dest),
            "--short-side",
            "45",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "packed 8 images" in result.stdout and "broken.JPEG" in result.stdout
    summary = json.loads((dest / "pack.json").read_text())
    assert summary["images"] == 8 and summary["skipped_other_files"] == 1
    packed = sorted(dest.glob("*/*/*.JPEG"))
    assert len(packed) == 8
    assert {Image.open(path).size for path in packed} == {(60, 45)}
    datamodule = ImageFolderDataModule(dest, img_size=32, num_workers=0)
    datamodule.setup()
    assert datamodule.class_names == ["zero", "one"]
