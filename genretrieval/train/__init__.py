"""Self-supervised training of the adapter: responses, teacher targets, optimisation."""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
