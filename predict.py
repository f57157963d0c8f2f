"""Predict classes of image files: `python predict.py ckpt_path=path/to/best.ckpt inputs=images/`."""

import hydra
from omegaconf import DictConfig

from vitlab import run
from vitlab.predict import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> float | None:
    return run.main(predict, cfg)


if __name__ == "__main__":
    main()
