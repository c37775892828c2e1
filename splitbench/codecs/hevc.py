"""HEVC intra, the coding inside BPG, through PyAV's bundled libx265 (``pip install av``).

Bitstream: the splitbench container ``pack(shape=(H, W), segments=[annex-B HEVC])``. The
container costs 8 bytes at 224² (magic/flags 2, two varint dims 4, CRC 2) and buys two things a
raw elementary stream lacks: the original size, so images can be padded to what the coder needs
(even sides for 4:2:0, at least 16 samples) and cropped back, and a checksum, because ffmpeg's
HEVC decoder turns a truncated or damaged stream into a garbage picture without an error.

x265 runs with ``info=0`` (no 2.2 KB settings SEI per image), CQP at ``quality`` = QP, one thread
(``pools=none``, ``frame-threads=1``: deterministic; a process pool parallelises instead).
The payload is then VPS+SPS+PPS (~80 B) and one IDR slice. Pixels are full-range BT.601 4:2:0
(see :mod:`splitbench.codecs.yuv`), 8 bits, as BPG's default. bpgenc's ``-q Q`` runs x265 in
CQP at QP Q+1 with ``tune=ssim`` and a preset picked by ``-m``; ``preset``/``tune`` here get closer.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from splitbench.codecs.base import (
    CODECS,
    CodecError,
    CodecUnavailableError,
    ImageCodec,
    check_image,
    pack_sized,
    require_module,
    unpack_sized,
)
from splitbench.codecs.yuv import coded_size, pad_to_coded, rgb_to_yuv420, yuv420_to_rgb

X265_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
X265_TUNES = ("psnr", "ssim", "grain", "fastdecode", "zerolatency")


def _import_av():
    return require_module("av", "av", "hevc")


@CODECS.register(
    "hevc",
    help="HEVC intra (PyAV/libx265, as in BPG), quality = QP 0-51 (lower is better), 4:2:0 8-bit, "
    "preset medium; default 29",
)
class HevcCodec(ImageCodec):
    name = "hevc"
    quality_range = (0, 51)
    default_quality = 29

    def __init__(self, quality: float, preset: str = "medium", tune: str | None = None) -> None:
        super().__init__(quality)
        if preset not in X265_PRESETS:
            raise ValueError(f"unknown x265 preset {preset!r}; known: {', '.join(X265_PRESETS)}")
        if tune is not None and tune not in X265_TUNES:
            raise ValueError(f"unknown x265 tune {tune!r}; known: {', '.join(X265_TUNES)}")
        self.preset, self.tune = preset, tune
        av = _import_av()
        if "libx265" not in av.codecs_available:
            raise CodecUnavailableError(
                "codec 'hevc' needs a PyAV build with libx265 (the PyPI wheels have it)"
            )

    def x265_params(self) -> str:
        return f"qp={self.quality}:info=0:log-level=none:pools=none:frame-threads=1:keyint=1"

    def encode_payload(self, image: np.ndarray) -> bytes:
        """The raw annex-B HEVC stream (what the container wraps) of an image at :func:`coded_size`."""
        av = _import_av()
        height, width = image.shape[:2]
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, values in zip(frame.planes, rgb_to_yuv420(image, bits=8), strict=True):
            # Rows are padded to the plane's line size (alignment), so copy row by row.
            rows = np.zeros((plane.height, plane.line_size), np.uint8)
            rows[:, : plane.width] = values
            plane.update(rows.tobytes())
        frame.pts = 0
        ctx = av.CodecContext.create("libx265", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        options = {"preset": self.preset, "x265-params": self.x265_params()}
        if self.tune:
            options["tune"] = self.tune
        ctx.options = options
        try:
            packets = [*ctx.encode(frame), *ctx.encode(None)]
        except av.error.FFmpegError as error:
            raise CodecError(f"libx265 failed on a {width}x{height} image: {error}") from error
        return b"".join(bytes(packet) for packet in packets)

    def decode_payload(self, payload: bytes, height: int, width: int) -> np.ndarray:
        """Decode a raw HEVC stream that must hold exactly one ``height``×``width`` 4:2:0 picture."""
        av = _import_av()
        ctx = av.CodecContext.create("hevc", "r")
        ctx.thread_count = 1
        # A stream whose SPS claims a much bigger picture than the container is refused before
        # allocation (libavcodec checks the CTB-aligned size, hence the 64-sample slack).
        ctx.options = {"max_pixels": str((height + 127) // 64 * 64 * ((width + 127) // 64 * 64))}
        try:
            frames = [*ctx.decode(av.Packet(payload)), *ctx.decode(None)]
        except av.error.FFmpegError as error:
            raise CodecError(f"corrupt hevc payload: {error}") from error
        if len(frames) != 1:
            raise CodecError(f"hevc payload holds {len(frames)} pictures, expected 1")
        frame = frames[0]
        if (frame.height, frame.width, frame.format.name) != (height, width, "yuv420p"):
            raise CodecError(
                f"hevc picture is {frame.width}x{frame.height} {frame.format.name}, "
                f"expected {width}x{height} yuv420p"
            )
        planes = [
            np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
            for plane in frame.planes
        ]
        return yuv420_to_rgb(*planes, bits=8)

    def encode(self, image: np.ndarray) -> bytes:
        image = check_image(image)
        return pack_sized(image.shape[:2], self.encode_payload(pad_to_coded(image)))

    def decode(self, data: bytes) -> np.ndarray:
        height, width, payload = unpack_sized(data, self.name)
        rgb = self.decode_payload(payload, *coded_size(height, width))
        return rgb[:height, :width]

    def describe(self) -> dict:
        av = _import_av()
        return {
            "codec": self.name,
            "quality": self.quality,
            "preset": self.preset,
            "tune": self.tune,
            "chroma": "4:2:0",
            "bit_depth": 8,
            "library": f"libx265 via PyAV {av.__version__}",
        }
