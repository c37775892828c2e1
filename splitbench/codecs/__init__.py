"""Standard image codecs behind one ``encode``/``decode`` interface, registered by name."""

from splitbench.codecs import pillow_codecs  # noqa: F401  (registers jpeg, webp)
from splitbench.codecs.base import (
    CODECS,
    CodecError,
    CodecUnavailableError,
    ImageCodec,
    get_codec,
    list_codecs,
)

__all__ = ["CODECS", "CodecError", "CodecUnavailableError", "ImageCodec", "get_codec", "list_codecs"]
