"""VVC (H.266) intra through the ffmpeg binary in the ``imageio-ffmpeg`` wheel: libvvenc to encode,
ffmpeg's native ``vvc`` decoder to decode.

libvvenc takes 10-bit 4:2:0 only, so pixels go in as full-range BT.601 4:2:0 at 10 bits made in
numpy (see :mod:`splitbench.codecs.yuv`) and come back the same way: ffmpeg never converts
colours, so the result does not depend on swscale. Bitstream: the splitbench container
``pack(shape=(H, W), segments=[annex-B VVC])``, 8 bytes at 224²: the true size, to crop the
padding to even sides ≥ 16, and a CRC, since the decoder turns damaged streams into garbage
pictures. libvvenc's defaults are kept (QPA on) apart from ``-qp``, ``-preset`` and one thread.
"""

from __future__ import annotations

import functools
import subprocess

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

VVENC_PRESETS = ("faster", "fast", "medium", "slow", "slower")
BIT_DEPTH = 10


@functools.cache
def ffmpeg_with_vvc() -> tuple[str, str]:
    """(path, version) of an ffmpeg that has libvvenc and the vvc decoder, or CodecUnavailableError."""
    imageio_ffmpeg = require_module("imageio_ffmpeg", "imageio-ffmpeg", "vvc")
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        listings = {
            what: subprocess.run(
                [exe, "-hide_banner", f"-{what}s"], capture_output=True, text=True, timeout=30
            ).stdout
            for what in ("encoder", "decoder")
        }
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        raise CodecUnavailableError(f"codec 'vvc' cannot run imageio-ffmpeg's ffmpeg: {error}") from error
    for needed, what in (("libvvenc", "encoder"), ("vvc", "decoder")):
        names = {line.split()[1] for line in listings[what].splitlines() if len(line.split()) > 1}
        if needed not in names:
            raise CodecUnavailableError(
                f"codec 'vvc' needs an ffmpeg with the {needed} {what}; {exe} lacks it "
                "(pip install -U imageio-ffmpeg: its Linux/Windows/macOS binaries include libvvenc)"
            )
    return exe, imageio_ffmpeg.get_ffmpeg_version()


@CODECS.register(
    "vvc",
    help="VVC intra (libvvenc in imageio-ffmpeg's ffmpeg), quality = QP 0-63 (lower is better), "
    "4:2:0 10-bit, preset faster (option); default 32",
)
class VvcCodec(ImageCodec):
    name = "vvc"
    quality_range = (0, 63)
    default_quality = 32
    # Subprocess limits, so a stuck ffmpeg can never hang a sweep (slower preset: ~10 s at 224²).
    encode_timeout_s: float = 600.0
    decode_timeout_s: float = 60.0

    def __init__(self, quality: float, preset: str = "faster") -> None:
        super().__init__(quality)
        if preset not in VVENC_PRESETS:
            raise ValueError(f"unknown vvenc preset {preset!r}; known: {', '.join(VVENC_PRESETS)}")
        self.preset = preset
        ffmpeg_with_vvc()

    def _run(self, args: list[str], stdin: bytes, timeout: float, what: str) -> bytes:
        exe, _ = ffmpeg_with_vvc()
        command = [exe, "-hide_banner", "-loglevel", "error", "-nostats", *args]
        try:
            result = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise CodecError(f"vvc {what} took longer than {timeout:.0f} s") from error
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip().splitlines()
            raise CodecError(f"vvc {what} failed: {message[-1] if message else result.returncode}")
        return result.stdout

    def encode_payload(self, image: np.ndarray) -> bytes:
        """The raw annex-B VVC stream (what the container wraps) of an image at :func:`coded_size`."""
        height, width = image.shape[:2]
        raw = b"".join(p.astype("<u2").tobytes() for p in rgb_to_yuv420(image, bits=BIT_DEPTH))
        args = ["-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{width}x{height}", "-r", "25"]
        args += ["-i", "pipe:0", "-c:v", "libvvenc", "-qp", str(self.quality), "-preset", self.preset]
        args += ["-threads", "1", "-frames:v", "1", "-f", "vvc", "pipe:1"]
        payload = self._run(args, raw, self.encode_timeout_s, "encode")
        if not payload:
            raise CodecError("vvc encode produced no bytes")
        return payload

    def decode_payload(self, payload: bytes, height: int, width: int) -> np.ndarray:
        """Decode a raw VVC stream that must hold one ``height``×``width`` 10-bit 4:2:0 picture."""
        args = ["-xerror", "-threads", "1", "-f", "vvc", "-i", "pipe:0", "-frames:v", "1"]
        args += ["-f", "rawvideo", "-pix_fmt", "yuv420p10le", "pipe:1"]
        raw = self._run(args, payload, self.decode_timeout_s, "decode")
        luma, chroma = height * width, (height // 2) * (width // 2)
        if len(raw) != 2 * (luma + 2 * chroma):
            raise CodecError(f"vvc picture is not {width}x{height} 4:2:0 (decoded {len(raw)} bytes)")
        samples = np.frombuffer(raw, "<u2")
        y = samples[:luma].reshape(height, width)
        cb = samples[luma : luma + chroma].reshape(height // 2, width // 2)
        cr = samples[luma + chroma :].reshape(height // 2, width // 2)
        return yuv420_to_rgb(y, cb, cr, bits=BIT_DEPTH)

    def encode(self, image: np.ndarray) -> bytes:
        image = check_image(image)
        return pack_sized(image.shape[:2], self.encode_payload(pad_to_coded(image)))

    def decode(self, data: bytes) -> np.ndarray:
        height, width, payload = unpack_sized(data, self.name)
        return self.decode_payload(payload, *coded_size(height, width))[:height, :width]

    def describe(self) -> dict:
        return {
            "codec": self.name,
            "quality": self.quality,
            "preset": self.preset,
            "chroma": "4:2:0",
            "bit_depth": BIT_DEPTH,
            "library": f"libvvenc via ffmpeg {ffmpeg_with_vvc()[1]}",
        }
