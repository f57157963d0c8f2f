"""Online k-NN monitor: how well the features being learnt separate the classes, without
training anything on them (DINO's and iBOT's ``eval_knn.py``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vitlab.errors import UserError

KNN_METRIC = "val/knn_acc1"


def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float | None = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """The class of each query by a vote of its ``k`` most cosine-similar bank features: each
    neighbour votes ``exp(similarity / temperature)`` for its class (DINO's ``knn_classifier``),
    or 1 with ``temperature`` None; the class with the most votes wins (the lowest index on a
    tie). Features are l2-normalised here."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, len(bank))
    predictions = []
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ bank.T
        top, indices = similarity.topk(k, dim=1)
        weights = torch.ones_like(top) if temperature is None else (top / temperature).exp()
        votes = torch.zeros(len(top), num_classes, device=top.device, dtype=top.dtype)
        votes.scatter_add_(1, bank_labels[indices], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


class KNNMonitor(L.Callback):
    """Every ``every_n_epochs`` epochs (and after the last), after validation: the features of
    the train split (evaluation preprocessing: ``train_eval_dataloader``) form the bank, the val
    split's are classified by ``knn_predict``, and their top-1 accuracy is logged as
    ``val/knn_acc1``. Features come from the task's ``features(images)``.

    Every process computes the same value over the whole splits (no sharding): a monitor for
    data the size of a val split, not a replacement for a full k-NN evaluation. A trainer's
    ``limit_train_batches`` / ``limit_val_batches`` cap the bank and the queries as they cap
    training and validation (``within_limit``).
    """

    def __init__(self, k: int = 20, temperature: float | None = 0.07, every_n_epochs: int = 1):
        if k < 1 or every_n_epochs < 1:
            raise UserError(
                f"callbacks.knn: k and every_n_epochs must be >= 1, got {k} and {every_n_epochs}"
            )
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "features"):
            raise UserError(
                f"callbacks.knn: {type(pl_module).__name__} has no features() to classify; "
                "use it with task=ibot, mae_pretrain, classification or linear_probe"
            )
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "train_eval_dataloader") or not datamodule.num_classes:
            raise UserError("callbacks.knn: the data must be a labelled vitlab DataModule")

    def val_metric_names(self) -> list[str]:
        """``val/knn_acc1`` when it is logged after every validation: then a task may monitor it
        (``task.monitor=val/knn_acc1 task.mode=max``) to pick the best checkpoint."""
        return [KNN_METRIC] if self.every_n_epochs == 1 else []

    @torch.no_grad()
    def features(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loader: Iterable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, labels = [], []
        for batch in loader:
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            images, targets = trainer.datamodule.on_after_batch_transfer(batch, 0)
            with trainer.precision_plugin.forward_context():
                features.append(pl_module.features(images).float())
            labels.append(targets)
        return torch.cat(features), torch.cat(labels)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if trainer.sanity_checking or not (epoch % self.every_n_epochs == 0 or last):
            return
        datamodule = trainer.datamodule
        bank_loader = within_limit(datamodule.train_eval_dataloader(), trainer.limit_train_batches)
        query_loader = within_limit(datamodule.val_dataloader(), trainer.limit_val_batches)
        bank, bank_labels = self.features(trainer, pl_module, bank_loader)
        queries, labels = self.features(trainer, pl_module, query_loader)
        predicted = knn_predict(
            bank, bank_labels, queries, datamodule.num_classes, self.k, self.temperature
        )
        accuracy = (predicted == labels).float().mean()
        pl_module.log(KNN_METRIC, accuracy, prog_bar=True)


def within_limit(loader: DataLoader, limit: int | float | None) -> Iterable:
    """``loader``'s batches within a Trainer's ``limit_*_batches``: a count, or a fraction of its
    length (1.0 or None: all)."""
    if limit is None or (isinstance(limit, float) and limit >= 1.0):
        return loader
    count = limit if isinstance(limit, int) else int(len(loader) * limit)
    return itertools.islice(loader, count)
