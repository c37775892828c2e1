"""Standard image codecs behind one ``encode``/``decode`` interface, registered by name.

Importing this package registers every codec but imports no optional backend (PyAV, the JPEG XL
plugin, ffmpeg): a codec whose backend is missing raises :class:`CodecUnavailableError`, naming
what to install, when it is built.
"""

from splitbench.codecs import bpg, hevc, pillow_codecs, vvc  # noqa: F401  (register the codecs)
from splitbench.codecs.base import (
    CODECS,
    CodecError,
    CodecUnavailableError,
    ImageCodec,
    available_codecs,
    get_codec,
    list_codecs,
)
from splitbench.codecs.features import FeatureCodec
from splitbench.codecs.options import CodecArgs, CodecOption, check_codec, codec_variant, quality_param
from splitbench.codecs.pool import CodecPool, CodedSample, CodingRun, SampleCodec, encode_decode_many
from splitbench.codecs.raw import RawFeatures, RawPixels

__all__ = [
    "CODECS",
    "CodecArgs",
    "CodecError",
    "CodecOption",
    "CodecPool",
    "CodecUnavailableError",
    "CodedSample",
    "CodingRun",
    "FeatureCodec",
    "ImageCodec",
    "RawFeatures",
    "RawPixels",
    "SampleCodec",
    "available_codecs",
    "check_codec",
    "codec_variant",
    "encode_decode_many",
    "get_codec",
    "list_codecs",
    "quality_param",
]
