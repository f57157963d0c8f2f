"""Pure torch.nn models: no Lightning, no Hydra."""

from vitlab.models.vit import VisionTransformer

__all__ = ["VisionTransformer"]
