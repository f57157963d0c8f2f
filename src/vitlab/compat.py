"""The private internals of Lightning and W&B that vitlab relies on, in one place.

Each is something neither library offers publicly; ``tests/test_compat.py`` checks that each
still exists and behaves as assumed on the installed versions (pyproject.toml bounds W&B to
the tested range). A new release that changes one breaks that test, not a user's run: where
W&B's internals are missing, its callers fall back with one warning (credentials: the run logs
offline; run file records: a resumed run logs its replayed steps again).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether this training step's logged values reach the loggers (``log_every_n_steps``):
    Lightning's logger connector decides, and exposes it only there."""
    return bool(trainer._logger_connector.should_update_logs)


def should_accumulate(trainer: L.Trainer) -> bool:
    """Whether this training batch only accumulates gradients (no optimizer step after it)."""
    return bool(trainer.fit_loop._should_accumulate())


def wandb_init_arguments(logger: Any) -> dict[str, Any]:
    """The keyword arguments Lightning's ``WandbLogger`` will pass to ``wandb.init`` (editable
    until the run starts)."""
    return logger._wandb_init


def wandb_credentials_found() -> bool:
    """Whether ``wandb.init`` would log in without asking: W&B's own search for credentials for
    its configured host (``WANDB_BASE_URL``, or the host of ``wandb login --host``), which
    ``wandb.login`` uses too. ``wandb.login`` itself is not called: it prints, and asks the
    server for the user's name. If W&B's internals changed, none are taken as found (the run
    logs offline) with one warning."""
    import wandb

    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        auth = wbauth.authenticate_session(
            host=wbauth.HostUrl(settings.base_url, app_url=settings.app_url),
            source="vitlab",
            prompt=False,
            verify=False,
            update_session=False,
        )
    except (ImportError, AttributeError, TypeError) as error:
        log.warning(
            "W&B %s: its credentials search changed (%s), so this run logs offline; "
            "pyproject.toml names the W&B versions vitlab is tested with",
            wandb.__version__,
            error,
        )
        return False
    return auth is not None


def wandb_record(data: bytes) -> Any:
    """One record (``wandb_internal_pb2.Record``) of a W&B run file, from its bytes."""
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record.FromString(data)
