"""A classifier whose stages up to the split point are replaced by a learned bottleneck.

Shared by every bottleneck method (Entropic Student, End-to-End, CR+BQ): they differ in the
coder and in how they train, not in the network.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from splitbench.compression.bottleneck import Bottleneck
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import SplitModel


class BottleneckClassifier(SplitModel):
    """normalise → g_a → coder | g_s → the backbone's stages after ``split_after``."""

    def __init__(self, backbone: StagedNetwork, split_after: str, bottleneck: Bottleneck, image_size: int) -> None:
        super().__init__()
        tail_names = backbone.stages_after(split_after)
        bottleneck.check_output_shape(image_size, backbone.stage_shapes(image_size)[split_after])
        self.split_after = split_after
        self.normalize = copy.deepcopy(backbone.normalize)
        self.bottleneck = bottleneck
        self.tail = StagedNetwork({n: copy.deepcopy(backbone.stages[n]) for n in tail_names}, nn.Identity())

    @property
    def coder(self):  # type: ignore[override]
        return self.bottleneck.coder

    @property
    def tail_stages(self) -> list[str]:
        return self.tail.stage_names

    def mobile_network(self) -> nn.Module:
        # Built on demand rather than registered, so the state dict has each weight once.
        return nn.Sequential(self.normalize, self.bottleneck.encoder)

    def server_forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.tail(self.bottleneck.decoder(y_hat))

    def forward(
        self, images: torch.Tensor, *, quantized: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Training path: (logits, stage outputs incl. the split point's, likelihoods).

        ``quantized`` feeds the decoder the test-time quantized latent (detached), as stage-2
        training of the Entropic Student requires; otherwise the coder's noisy proxy is used.
        """
        x = self.normalize(images)
        if quantized:
            with torch.no_grad():
                y_hat = self.coder.quantize(self.bottleneck.encoder(x))
            features, likelihoods = self.bottleneck.decoder(y_hat), {}
        else:
            features, likelihoods = self.bottleneck(x)
        logits, tapped = self.tail(features, taps=self.tail_stages)
        tapped[self.split_after] = features
        return logits, tapped, likelihoods
