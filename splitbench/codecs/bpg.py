"""BPG through Fabrice Bellard's own ``bpgenc``/``bpgdec`` command-line tools, when they are on PATH.

They are in neither Debian nor PyPI, so this codec is optional: building it without the tools
raises :class:`CodecUnavailableError`. The ``hevc`` codec gives the same coding (x265 intra,
4:2:0) without them. Bytes are the ``.bpg`` file bpgenc writes (it has its own header with the
size), so no splitbench container is added.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image

from splitbench.codecs.base import (
    CODECS,
    CodecError,
    CodecUnavailableError,
    ImageCodec,
    check_bytes,
    check_image,
)

INSTALL_HINT = (
    "build libbpg from https://bellard.org/bpg/ (make && make install puts bpgenc and bpgdec on PATH); "
    "it is packaged in neither Debian nor PyPI. Codec 'hevc' gives the same x265 intra coding via PyAV"
)


def find_tools() -> tuple[str, str]:
    """Paths of bpgenc and bpgdec, or CodecUnavailableError saying how to get them."""
    encoder, decoder = shutil.which("bpgenc"), shutil.which("bpgdec")
    if encoder is None or decoder is None:
        missing = " and ".join(
            name for name, path in (("bpgenc", encoder), ("bpgdec", decoder)) if path is None
        )
        raise CodecUnavailableError(f"codec 'bpg' needs {missing} on PATH: {INSTALL_HINT}")
    return encoder, decoder


@CODECS.register(
    "bpg",
    help="BPG (external bpgenc/bpgdec on PATH), quality = bpgenc -q 0-51 (lower is better), 4:2:0, "
    "level -m 1-9 (option, 8); default 29",
)
class BpgCodec(ImageCodec):
    name = "bpg"
    quality_range = (0, 51)
    default_quality = 29
    timeout_s: float = 120.0

    def __init__(self, quality: float, level: int = 8) -> None:
        super().__init__(quality)
        if not 1 <= level <= 9:
            raise ValueError(f"bpg level (bpgenc -m) must be in [1, 9], got {level}")
        self.level = int(level)
        find_tools()

    def _run(self, command: list[str], what: str) -> None:
        try:
            result = subprocess.run(
                command, capture_output=True, timeout=self.timeout_s, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as error:
            raise CodecError(f"bpg {what} took longer than {self.timeout_s:.0f} s") from error
        except OSError as error:
            raise CodecUnavailableError(f"cannot run {command[0]}: {error}; {INSTALL_HINT}") from error
        if result.returncode != 0:
            message = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise CodecError(f"bpg {what} failed (exit {result.returncode}): {message[-300:]}")

    def encode(self, image: np.ndarray) -> bytes:
        image = check_image(image)
        encoder, _ = find_tools()
        with tempfile.TemporaryDirectory(prefix="splitbench-bpg-") as tmp:
            source, target = os.path.join(tmp, "in.png"), os.path.join(tmp, "out.bpg")
            Image.fromarray(image).save(source, compress_level=1)
            command = [
                encoder,
                "-q",
                str(self.quality),
                "-m",
                str(self.level),
                "-f",
                "420",
                "-o",
                target,
                source,
            ]
            self._run(command, "encode")
            with open(target, "rb") as file:
                return file.read()

    def decode(self, data: bytes) -> np.ndarray:
        data = check_bytes(data, self.name)
        _, decoder = find_tools()
        with tempfile.TemporaryDirectory(prefix="splitbench-bpg-") as tmp:
            source, target = os.path.join(tmp, "in.bpg"), os.path.join(tmp, "out.png")
            with open(source, "wb") as file:
                file.write(data)
            self._run([decoder, "-o", target, source], "decode")
            try:
                with open(target, "rb") as file, Image.open(io.BytesIO(file.read()), formats=["PNG"]) as img:
                    img.load()
                    return np.asarray(img.convert("RGB"))
            except (OSError, SyntaxError, ValueError) as error:
                raise CodecError(f"bpgdec wrote no readable picture: {error}") from error

    def describe(self) -> dict:
        return {"codec": self.name, "quality": self.quality, "level": self.level, "chroma": "4:2:0"}
