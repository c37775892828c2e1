"""Backbones by name, split at named stages."""

from splitbench.models.backbones import BACKBONES, get_backbone, list_backbones
from splitbench.models.staged import SplitPointError, StagedNetwork

__all__ = ["BACKBONES", "SplitPointError", "StagedNetwork", "get_backbone", "list_backbones"]
