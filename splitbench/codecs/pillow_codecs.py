"""Codecs that Pillow implements natively (JPEG, WebP)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from splitbench.codecs.base import CODECS, CodecError, ImageCodec, check_image


class PillowCodec(ImageCodec):
    """A codec Pillow writes and reads by format name; subclasses set the format and save options."""

    pil_format: str = ""

    def save_options(self) -> dict:
        return {"quality": int(self.quality)}

    def encode(self, image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(check_image(image)).save(buffer, format=self.pil_format, **self.save_options())
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data), formats=[self.pil_format]) as img:
                img.load()
                return np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise CodecError(f"cannot decode {self.name} bitstream: {error}") from error


@CODECS.register("jpeg", help="JPEG (Pillow/libjpeg), quality 1-100, 4:2:0")
class JpegCodec(PillowCodec):
    name = "jpeg"
    pil_format = "JPEG"
    quality_range = (1, 100)


@CODECS.register("webp", help="WebP lossy (Pillow/libwebp), quality 0-100")
class WebpCodec(PillowCodec):
    name = "webp"
    pil_format = "WEBP"
    quality_range = (0, 100)

    def save_options(self) -> dict:
        return {"quality": int(self.quality), "method": 4}
