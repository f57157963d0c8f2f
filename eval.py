"""Evaluate a checkpoint written by train.py: `python eval.py ckpt_path=path/to/best.ckpt`."""

import hydra
from omegaconf import DictConfig

from vitlab import run


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run.main(run.evaluate, cfg)


if __name__ == "__main__":
    main()
