"""Self-supervised training of the adapter: responses, teacher targets, then optimisation or a read-out fit."""

from .trainer import DEFAULT_STAGES, STAGES, TrainConfig, train

__all__ = ["DEFAULT_STAGES", "STAGES", "TrainConfig", "train"]
