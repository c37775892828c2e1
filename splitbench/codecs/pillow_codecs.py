"""Codecs that Pillow reads and writes by format name: JPEG, WebP, AVIF (built into Pillow ≥ 11.3), PNG,
and JPEG XL (through the ``pillow-jxl-plugin`` package).

Their bytes are the standard files (JFIF, RIFF/WebP, ISOBMFF/AVIF, PNG, JXL codestream), exactly
what Pillow writes with the same options, so sizes compare with published figures. These formats
carry their own size and headers, so no splitbench container is added.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, features

from splitbench.codecs.base import (
    CODECS,
    CodecError,
    CodecUnavailableError,
    ImageCodec,
    check_bytes,
    check_image,
    check_plane,
    require_module,
)

# What a corrupt file can make Pillow or a plugin raise; anything here means "bad bitstream".
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    RuntimeError,
    TypeError,
    IndexError,
    KeyError,
    struct.error,
    Image.DecompressionBombError,
)


class PillowCodec(ImageCodec):
    """A codec Pillow writes and reads by format name; subclasses set the format and save options."""

    pil_format: str = ""
    # Largest decoded image accepted, checked on the header before pixels are allocated (a server sets its own on
    # the instance). Pillow's Image.MAX_IMAGE_PIXELS bomb check still applies on top: it raises at twice that.
    max_pixels: int = 1 << 26

    def __init__(self, quality: float) -> None:
        super().__init__(quality)
        self.load_backend()

    def load_backend(self) -> None:
        """Make sure Pillow can handle ``pil_format`` here (also run in pool workers before use)."""

    def save_options(self) -> dict:
        return {"quality": self.quality}

    def _save(self, img: Image.Image) -> bytes:
        self.load_backend()
        buffer = io.BytesIO()
        try:
            img.save(buffer, format=self.pil_format, **self.save_options())
        except (OSError, ValueError) as error:
            raise CodecError(f"{self.name} cannot encode a {img.mode} {img.size} image: {error}") from error
        return buffer.getvalue()

    def _header(self, data: bytes) -> Image.Image:
        """The image opened lazily (header parsed, no pixels yet), refused over :attr:`max_pixels`."""
        img = Image.open(io.BytesIO(check_bytes(data, self.name)), formats=[self.pil_format])
        width, height = img.size
        if width * height > self.max_pixels:
            img.close()
            raise CodecError(f"{self.name} image of {width}x{height} exceeds {self.max_pixels} pixels")
        return img

    def image_size(self, data: bytes) -> tuple[int, int]:
        self.load_backend()
        try:
            with self._header(data) as img:
                return img.size[1], img.size[0]
        except CodecError:
            raise
        except _DECODE_ERRORS as error:
            raise CodecError(f"cannot decode {self.name} bitstream: {error}") from error

    def _open(self, data: bytes, mode: str) -> np.ndarray:
        self.load_backend()
        try:
            with self._header(data) as img:
                img.load()
                return np.asarray(img.convert(mode))
        except CodecError:
            raise
        except _DECODE_ERRORS as error:
            raise CodecError(f"cannot decode {self.name} bitstream: {error}") from error

    def encode(self, image: np.ndarray) -> bytes:
        return self._save(Image.fromarray(check_image(image)))

    def decode(self, data: bytes) -> np.ndarray:
        return self._open(data, "RGB")

    def encode_gray(self, plane: np.ndarray) -> bytes:
        """Native single-channel coding (JPEG, PNG, AVIF 4:0:0, JPEG XL): no chroma to pay for."""
        return self._save(Image.fromarray(check_plane(plane), mode="L"))

    def decode_gray(self, data: bytes) -> np.ndarray:
        return self._open(data, "L")

    def describe(self) -> dict:
        return {"codec": self.name, "quality": self.quality, **self.save_options()}


@CODECS.register("jpeg", help="JPEG (Pillow/libjpeg-turbo), quality 0-100 (libjpeg scale; 0 codes as 1), 4:2:0; "
                             "default 75")
class JpegCodec(PillowCodec):
    name = "jpeg"
    pil_format = "JPEG"
    quality_range = (0, 100)  # libjpeg's jpeg_set_quality clamps 0 to 1, so a sweep may start at 0 for every codec

    def save_options(self) -> dict:
        return {"quality": self.quality, "subsampling": "4:2:0"}

    def describe(self) -> dict:
        return {**super().describe(), "library": f"libjpeg-turbo {features.version('libjpeg_turbo')}"}


@CODECS.register("webp", help="WebP lossy (Pillow/libwebp), quality 0-100, method 4; default 75")
class WebpCodec(PillowCodec):
    name = "webp"
    pil_format = "WEBP"
    quality_range = (0, 100)
    integer_quality = False

    def save_options(self) -> dict:
        return {"quality": self.quality, "method": 4}

    def describe(self) -> dict:
        return {**super().describe(), "library": f"libwebp {features.version('webp')}"}


@CODECS.register(
    "avif",
    help="AVIF / AV1 intra (Pillow's built-in libavif), quality 0-100 (libavif scale), 4:2:0, "
    "speed 6; default 50",
)
class AvifCodec(PillowCodec):
    name = "avif"
    pil_format = "AVIF"
    quality_range = (0, 100)
    default_quality = 50

    def __init__(self, quality: float, speed: int = 6) -> None:
        if not 0 <= speed <= 10:
            raise ValueError(f"avif speed must be in [0, 10], got {speed}")
        self.speed = int(speed)
        super().__init__(quality)

    def load_backend(self) -> None:
        if not features.check("avif"):
            raise CodecUnavailableError(
                "codec 'avif' needs Pillow built with AVIF support (the Pillow >= 11.3 wheels): "
                "pip install -U pillow"
            )

    def save_options(self) -> dict:
        # One thread: deterministic, and a process pool (not libavif) is what parallelises a sweep.
        return {"quality": self.quality, "speed": self.speed, "subsampling": "4:2:0", "max_threads": 1}

    def describe(self) -> dict:
        return {**super().describe(), "library": f"libavif {features.version('avif')}"}


@CODECS.register(
    "jpegxl",
    help="JPEG XL (libjxl via pillow-jxl-plugin), quality 0-100 (libjxl's scale; 100 = lossless), "
    "effort 7; default 75",
)
class JpegXlCodec(PillowCodec):
    name = "jpegxl"
    pil_format = "JXL"
    quality_range = (0, 100)
    integer_quality = False

    def __init__(self, quality: float, effort: int = 7) -> None:
        if not 1 <= effort <= 9:
            raise ValueError(f"jpegxl effort must be in [1, 9], got {effort}")
        self.effort = int(effort)
        super().__init__(quality)

    def load_backend(self) -> None:
        # Importing the package registers the "JXL" format with Pillow (needed in every process).
        require_module("pillow_jxl", "pillow-jxl-plugin", self.name)

    def save_options(self) -> dict:
        return {"quality": self.quality, "effort": self.effort, "num_threads": 1}


@CODECS.register(
    "png", help="PNG (Pillow/zlib), lossless; quality = zlib level 0-9 (size/speed only); default 6"
)
class PngCodec(PillowCodec):
    name = "png"
    pil_format = "PNG"
    quality_range = (0, 9)
    default_quality = 6

    def save_options(self) -> dict:
        return {"compress_level": self.quality}
