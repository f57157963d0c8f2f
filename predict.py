"""Predict classes of image files: `python predict.py ckpt_path=path/to/best.ckpt inputs=images/`.

See ``vitlab.predict`` (and ``python predict.py --help``) for the images it accepts.
"""

import hydra
from omegaconf import DictConfig

import vitlab.config  # noqa: F401  (the resolvers conf/paths uses)
from vitlab import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict.main(cfg)


if __name__ == "__main__":
    main()
