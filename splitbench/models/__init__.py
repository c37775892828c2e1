"""Models: backbones by name as staged networks, trunks, heads, and the one model shape (SplitNetwork)."""

from splitbench.models.backbones import BACKBONES, get_backbone, list_backbones
from splitbench.models.network import NetworkOutput, SplitNetwork
from splitbench.models.staged import SplitPointError, StagedNetwork

__all__ = ["BACKBONES", "NetworkOutput", "SplitNetwork", "SplitPointError", "StagedNetwork", "get_backbone",
           "list_backbones"]
