"""``vitlab-train`` (``python train.py``): train and test a Vision Transformer; ``--help``
lists the config groups."""

import hydra
from omegaconf import DictConfig

from vitlab.cli import CONFIG_PATH, start

# the entry config, conf/train.yaml
CONFIG_NAME = "train"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg: DictConfig) -> float | None:
    from vitlab import run  # here: --help imports no Lightning

    return run.main(run.train, cfg)


def main() -> None:
    start(app, CONFIG_NAME)
