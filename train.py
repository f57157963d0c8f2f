"""Train (and test) a Vision Transformer. `python train.py --help` lists the config groups."""

import hydra
from omegaconf import DictConfig

from vitlab import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run.main(run.train, cfg)


if __name__ == "__main__":
    main()
