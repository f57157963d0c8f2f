"""The k-NN monitor against scikit-learn's KNeighborsClassifier on the same features: DINO's
temperature-weighted vote (a distance-weight function of sklearn's cosine distance) and the
plain vote; under a real Trainer, the logged accuracy is sklearn's on the model's features;
every task's features, and the pretraining encoders, made by the ViT's one token path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import DataLoader

from vitlab.callbacks.knn import KNNMonitor, knn_predict, within_limit
from vitlab.data.digits import DigitsDataModule
from vitlab.errors import UserError
from vitlab.models.ibot import encode
from vitlab.models.vit import PatchTokens
from vitlab.run import build_run
from vitlab.tasks.base import build_task
from vitlab.tasks.classification import ClassificationTask


def sklearn_knn(k: int, temperature: float | None) -> KNeighborsClassifier:
    """exp(similarity / T) votes: sklearn's cosine distance is 1 - similarity."""
    weights = "uniform" if temperature is None else (lambda d: np.exp((1 - d) / temperature))
    return KNeighborsClassifier(k, weights=weights, metric="cosine", algorithm="brute")


@pytest.mark.parametrize("temperature", [0.07, None])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_predictions_are_sklearns(k, temperature):
    generator = torch.Generator().manual_seed(k)
    bank, queries = (
        torch.randn(300, 12, generator=generator),
        torch.randn(80, 12, generator=generator),
    )
    labels = torch.randint(0, 7, (300,), generator=generator)
    ours = knn_predict(bank, labels, queries, 7, k, temperature, chunk=32)
    reference = sklearn_knn(k, temperature).fit(bank.numpy(), labels.numpy())
    np.testing.assert_array_equal(ours.numpy(), reference.predict(queries.numpy()))


def test_the_logged_accuracy_is_sklearns_on_the_models_features(
    vit_config, optimizer_config, quiet_trainer, tmp_path, task_recipe
):
    torch.manual_seed(0)
    recipe = task_recipe("classification", warmup_epochs=0)  # the step moves the weights
    task = ClassificationTask(vit_config(), optimizer_config(), **recipe)
    data = DigitsDataModule(batch_size=128)
    # the whole train split is the bank (a limit_train_batches would cap it too)
    trainer = quiet_trainer(max_epochs=1, callbacks=[KNNMonitor(k=10, every_n_epochs=1)])
    trainer.fit(task, datamodule=data)
    logged = trainer.callback_metrics["val/knn_acc1"].item()
    task.eval()
    with torch.no_grad():

        def features(loader):
            batches = (data.on_after_batch_transfer(batch, 0) for batch in loader)
            pairs = [(task.features(images), labels) for images, labels in batches]
            return torch.cat([f for f, _ in pairs]).numpy(), torch.cat(
                [y for _, y in pairs]
            ).numpy()

        bank, bank_labels = features(data.train_eval_dataloader())
        queries, labels = features(data.val_dataloader())
    reference = sklearn_knn(10, 0.07).fit(bank, bank_labels).score(queries, labels)
    assert logged == pytest.approx(reference)
    # the bank is the train split with the evaluation preprocessing (no augmentation)
    assert len(bank) == len(data.splits["train"])
    torch.testing.assert_close(
        data.train_eval_dataloader().dataset[0][0],
        data.eval_transform()(data.splits["train"].images[0]),
    )


def test_a_task_without_features_is_refused_with_the_callback_named():
    with pytest.raises(UserError, match="callbacks.knn: Linear has no features"):
        KNNMonitor().setup(None, torch.nn.Linear(1, 1), "fit")


def zero_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change of ``prepare_tokens``: every token it makes zeroed, so whatever is computed
    from its tokens no longer depends on the images."""
    prepare = PatchTokens.prepare_tokens
    monkeypatch.setattr(
        PatchTokens, "prepare_tokens", lambda self, *args, **kw: 0 * prepare(self, *args, **kw)
    )


# each task with its digits recipe (train.py refuses a task= choice without one)
RECIPE_OF = {
    "classification": [],
    "mae_pretrain": ["experiment=digits_mae_pretrain"],
    "ibot": ["experiment=digits_ibot"],
}


@pytest.mark.parametrize("task", list(RECIPE_OF))
def test_features_and_pretraining_encoders_take_their_tokens_from_prepare_tokens(
    compose_config, monkeypatch, task
):
    """k-NN's features of every task with an encoder of its own, MAE's encoder (visible
    patches) and iBOT's (masked patches, local crops) change with ``prepare_tokens``."""
    torch.manual_seed(0)
    module = build_task(compose_config(*RECIPE_OF[task]).task).eval()
    images = torch.randn(2, 1, 8, 8)
    vit = module.model

    def outputs() -> list[torch.Tensor]:
        with torch.no_grad():
            made = [module.features(images)]
            if task == "mae_pretrain":
                made.append(vit.forward_encoder(images, 0.5, torch.Generator().manual_seed(0))[0])
            if task == "ibot":
                mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
                made += [
                    encode(vit, images, mask, torch.randn(vit.embed_dim)),
                    encode(vit, images[..., :4, :4]),
                ]
            return made

    assert all(not torch.allclose(out[0], out[1]) for out in outputs())
    zero_every_token(monkeypatch)
    assert all(torch.allclose(out[0], out[1]) for out in outputs())


def test_a_trainers_batch_limits_cap_the_bank_and_the_queries_as_they_cap_training():
    loader = DataLoader(range(10), batch_size=2)
    assert [len(list(within_limit(loader, limit))) for limit in (1.0, None, 3, 0.5)] == [5, 5, 3, 2]


@pytest.mark.parametrize("every_n_epochs", [1, 10])
def test_a_task_may_monitor_the_knn_accuracy_when_it_is_logged_every_epoch(
    every_n_epochs, compose_config
):
    cfg = compose_config(
        "experiment=digits_ibot",
        "logger=none",
        "task.monitor=val/knn_acc1",
        "task.mode=max",
        f"callbacks.knn.every_n_epochs={every_n_epochs}",
    )
    if every_n_epochs == 1:
        _, task, trainer = build_run(cfg, None)
        assert trainer.checkpoint_callback.monitor == task.monitor == "val/knn_acc1"
    else:
        with pytest.raises(UserError, match=r"^task.monitor: the run logs no 'val/knn_acc1'"):
            build_run(cfg, None)
