"""The split protocol (:class:`SplitPipeline`) and its implementations: every learned bottleneck
(:class:`LearnedPipeline`), standard codecs on the image or on features (:class:`InputCodecPipeline`,
:class:`FeatureCodecPipeline`), and neural input codecs (:class:`NeuralCodecPipeline`)."""

from splitbench.pipelines.base import DeviceExport, SplitPipeline
from splitbench.pipelines.codec import CodecPipeline, FeatureCodecPipeline, InputCodecPipeline
from splitbench.pipelines.learned import LearnedPipeline
from splitbench.pipelines.neural_codec import NeuralCodecPipeline

__all__ = ["CodecPipeline", "DeviceExport", "FeatureCodecPipeline", "InputCodecPipeline", "LearnedPipeline",
           "NeuralCodecPipeline", "SplitPipeline"]
