"""ImageNet (or any image-folder tree) streamed from LitData shards written by
``vitlab-pack <tree> <dest> --format shards``: a local folder or any URL LitData reads
(``s3://``, ``gs://``, ...), with the augmentation path of the image-folder DataModules.

LitData shards a ``StreamingDataset`` itself: each DDP/multi-node rank (and each loader worker)
reads its own chunks, so Lightning adds no sampler. ``StreamingDataLoader.state_dict()`` is
what Lightning's fit loop saves in a checkpoint for a stateful train loader; a run resumed
from a mid-epoch checkpoint streams on from the sample it stopped at.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vitlab.data.decode import decode_bytes
from vitlab.data.epoch_seed import seed_epoch
from vitlab.data.pack import META
from vitlab.data.rgb import ImageDataModule
from vitlab.data.transforms import min_decode_side
from vitlab.extras import require

# the folder of each split (test: val, ImageNet's convention)
FOLDERS = {"train": "train", "val": "val", "test": "val"}


class DecodeSample:
    """A shard item ``{"image": JPEG bytes, "label": class index}`` to ``(transform(image),
    label)``, decoded as the image-folder fast path decodes a file (LitData calls it per item)."""

    def __init__(self, transform: Callable, fast_path: bool):
        self.transform = transform
        self.min_side = min_decode_side(transform) if fast_path else None

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int]:
        image = decode_bytes(bytes(item["image"]), self.min_side)  # LitData: a memoryview
        return self.transform(image), item["label"]


@functools.cache
def streaming_loader_class() -> type:
    """``StreamingDataLoader`` whose every start of the iterator streams the same epoch, unless it
    resumes from a loaded state. LitData counts iterator starts as epochs; Lightning starts an
    epoch's iterator twice in an uninterrupted run and once in a resumed one. The order of an
    epoch comes from the dataset's seed instead: the epoch's shuffle seed (``seed_epoch``)."""
    from litdata import StreamingDataLoader

    class EpochLoader(StreamingDataLoader):
        def __iter__(self):
            if not self.restore:
                self.current_epoch = 0
            return super().__iter__()

    return EpochLoader


class ShardsDataModule(ImageDataModule):
    """``<root>/{train,val}`` LitData shards and ``<root>/meta`` (class names, sizes), as
    ``vitlab-pack --format shards`` writes them; tested on val (ImageNet's convention).

    ``root`` is a folder or a URL LitData reads; ``cache_dir`` where LitData keeps the chunks
    of a remote root (null: LitData's default). ``num_classes`` null reads the count from the
    shards; a number is checked against it. The train order is a LitData shuffle seeded per
    epoch (``epoch_seed``); repeated augmentation needs an index sampler, which a stream has not.
    """

    name = "imagenet_shards"

    def __init__(
        self,
        root: str,
        img_size: int,
        num_classes: int | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(img_size=img_size, num_classes=num_classes, **kwargs)
        if self.repeated_aug > 1:
            raise ValueError(
                f"repeated_aug: streaming shards take no index sampler; set it to 1, got "
                f"{self.repeated_aug}"
            )
        self.root = str(root).rstrip("/")
        self.cache_dir = cache_dir
        self.transforms: dict[str, Callable] = {}
        self.sizes: dict[str, int] = {}

    def stream(
        self, folder: str, transform: Callable | None, train: bool = False, seed: int = 0
    ) -> IterableDataset:
        """A ``StreamingDataset`` of ``<root>/<folder>``, sharded for the process group that
        exists as it is built; ``transform`` (an image transform) decodes and prepares items."""
        from litdata import StreamingDataset

        return StreamingDataset(
            f"{self.root}/{folder}",
            cache_dir=self.cache_dir,
            shuffle=train,
            drop_last=train,
            seed=seed,
            transform=DecodeSample(transform, self.fast_path) if transform else None,
        )

    def read_meta(self) -> None:
        """Class names and split sizes from the one item of ``<root>/meta``, read by index: the
        same for every rank (a stream would deal items out to the ranks)."""
        require("shards", "data")
        try:
            meta = self.stream(META, None)[0]
        except (FileNotFoundError, ValueError, OSError) as error:
            raise FileNotFoundError(
                f"{self.name}: no shards at {self.root}/{META} ({error}); write them with "
                f"vitlab-pack <tree> <dest> --format shards and set data.root=<dest>"
            ) from None
        names, sizes = json.loads(meta["class_names"]), json.loads(meta["sizes"])
        if self.num_classes is not None and self.num_classes != len(names):
            raise ValueError(
                f"{self.name}: data.num_classes={self.num_classes} but the shards at {self.root} "
                f"have {len(names)} classes (num_classes: null reads it from the shards)"
            )
        self.num_classes, self.class_names = len(names), names
        self.sizes = {split: sizes[folder] for split, folder in FOLDERS.items()}

    def dataset_sizes(self) -> dict[str, int]:
        """The whole splits' sizes, whichever rank asks."""
        return dict(self.sizes)

    def build_rgb_splits(
        self, train_transform: Callable, eval_transform: Callable
    ) -> dict[str, Dataset]:
        self.read_meta()
        self.transforms = {"train": train_transform, "val": eval_transform, "test": eval_transform}
        return {split: self.stream(FOLDERS[split], self.transforms[split]) for split in FOLDERS}

    def streaming_loader(
        self, split: str, transform: Callable, train: bool, seed: int = 0
    ) -> DataLoader:
        """A fresh ``StreamingDataset`` in each loader: ``setup`` may run before the trainer
        starts the process group the dataset shards for."""
        dataset = self.stream(FOLDERS[split], transform, train, seed)
        return streaming_loader_class()(
            dataset,
            batch_size=self.loading.batch_size,
            num_workers=self.loader_workers(),
            collate_fn=self.collate,
            pin_memory=self.loading.pin(),
            drop_last=train,
        )

    def loader(self, split: str, sampler: Any = None, train: bool = False) -> DataLoader:
        """The val and test streams (``train_dataloader`` builds the train one)."""
        return self.streaming_loader(split, self.transforms[split], train=False)

    def train_dataloader(self) -> DataLoader:
        # the epoch's RNGs are reseeded as its loader is built (see vitlab.data.epoch_seed); the
        # epoch's shuffle seed orders the stream
        shuffle_seed = seed_epoch(self.epoch_seed, self.trainer)
        if shuffle_seed is None:
            shuffle_seed = self.seed + (self.trainer.current_epoch if self.trainer else 0)
        return self.streaming_loader("train", self.transforms["train"], True, shuffle_seed)

    def train_eval_dataloader(self) -> DataLoader:
        """The train split in order, with the evaluation preprocessing."""
        return self.streaming_loader("train", self.transforms["val"], train=False)
