"""``vitlab-predict`` (``python predict.py``): what a trained task predicts for image files
(classes, masks or boxes), ``vitlab-predict ckpt_path=path/to/best.ckpt inputs=images/``.

See ``vitlab.predict`` (and ``--help``) for the images it accepts.
"""

import hydra
from omegaconf import DictConfig

from vitlab.cli import CONFIG_PATH, start

# the entry config, conf/predict.yaml
CONFIG_NAME = "predict"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg: DictConfig) -> None:
    from vitlab import predict  # here: --help imports no torch

    predict.main(cfg)


def main() -> None:
    start(app, CONFIG_NAME)
