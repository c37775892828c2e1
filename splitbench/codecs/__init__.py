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
from splitbench.codecs.pool import CodedSample, CodingRun, encode_decode_many

__all__ = [
    "CODECS",
    "CodecError",
    "CodecUnavailableError",
    "CodedSample",
    "CodingRun",
    "FeatureCodec",
    "ImageCodec",
    "available_codecs",
    "encode_decode_many",
    "get_codec",
    "list_codecs",
]
