"""MIND (METHODS.md §2): MetaNet-scored multi-perspective distillation. ``METHOD`` is what the registry loads."""

from cotdistill.methods.mind.calibration import LossEMA, calibration_loss
from cotdistill.methods.mind.metanet import MetaNet
from cotdistill.methods.mind.method import MindMethod
from cotdistill.methods.mind.selection import select_and_weight, uniform_weights

METHOD = MindMethod

__all__ = ["METHOD", "LossEMA", "MetaNet", "MindMethod", "calibration_loss", "select_and_weight", "uniform_weights"]
