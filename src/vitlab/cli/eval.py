"""``vitlab-eval`` (``python eval.py``): evaluate a checkpoint written by train.py,
``vitlab-eval ckpt_path=path/to/best.ckpt``."""

import hydra
from omegaconf import DictConfig

from vitlab.cli import CONFIG_PATH, start

# the entry config, conf/eval.yaml
CONFIG_NAME = "eval"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg: DictConfig) -> float | None:
    from vitlab import run  # here: --help imports no Lightning

    return run.main(run.evaluate, cfg)


def main() -> None:
    start(app, CONFIG_NAME)
