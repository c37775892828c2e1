"""The bitstream container: the only thing that crosses the split, one per sample.

Layout (all integers unsigned LEB128 varints unless noted)::

    byte 0      0xB0 | version                     (magic in the high nibble)
    byte 1      ndim (bits 0-2) | (nsegments-1) << 3 | backend << 5
    dims        ndim varints, each in [1, MAX_DIM]
    lengths     nsegments-1 varints (the last segment runs to the end)
    crc         2 bytes, CRC-CCITT over everything else (header and payload)
    payload     the segments, concatenated

A 2-D latent smaller than 128×128 with one segment costs 6 bytes of header. The CRC is what
lets a parser reject a truncated or corrupted payload *before* it reaches a C++ entropy decoder,
which would otherwise decode garbage silently (or read past the buffer).

The **backend** is the entropy coder that wrote the segments, so a server decodes each stream with
the coder that wrote it (:data:`BACKENDS`): 0 ``compressai`` (CompressAI's rANS; also the 8-bit
quantizer's fixed-length code, which no entropy coder touches), 1 ``constriction`` (constriction's
range coder over the same 16-bit tables: the torch-free device, :mod:`splitbench.runtime.device`).
Version 1 has no backend field (bits 5-7 must be zero): it is backend 0, and a backend-0 stream is
still written as version 1, byte for byte as before. Version 2 puts the backend in bits 5-7, so a
stream costs the same header bytes whichever coder wrote it.
"""

from __future__ import annotations

import binascii
from collections.abc import Collection
from dataclasses import dataclass

from splitbench.errors import SplitbenchError

MAGIC = 0xB0
VERSION = 2  # the newest this reader parses; pack writes the lowest that can say what a stream holds
BACKENDS = ("compressai", "constriction")  # index = the backend id in the header
DEFAULT_BACKEND = BACKENDS[0]
MAX_NDIM = 7
MAX_SEGMENTS = 4
MAX_DIM = 65535
MAX_VARINT_BYTES = 3
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class BitstreamError(SplitbenchError, ValueError):
    """The bytes are not a valid splitbench bitstream (truncated, corrupt, oversized or mismatched)."""


@dataclass(frozen=True)
class Bitstream:
    shape: tuple[int, ...]
    segments: tuple[bytes, ...]
    backend: str = DEFAULT_BACKEND


def version_for(backend: str) -> int:
    """The container version a stream of ``backend`` is written as: 1 for CompressAI's (as always), else 2."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    return 2 if BACKENDS.index(backend) else 1


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0 or value >= 1 << (7 * MAX_VARINT_BYTES):
        raise ValueError(f"value {value} does not fit in a {MAX_VARINT_BYTES}-byte varint")
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def _get_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos >= len(data):
            raise BitstreamError(f"truncated bitstream: header ends inside {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise BitstreamError(f"corrupt bitstream: {what} is longer than {MAX_VARINT_BYTES} bytes")


def pack(shape: tuple[int, ...] | list[int], segments: list[bytes] | tuple[bytes, ...],
         backend: str = DEFAULT_BACKEND) -> bytes:
    """Wrap ``segments`` (e.g. entropy-coded strings of y and z), a ``shape`` and the ``backend`` that coded them
    into one bitstream (version 1 for the default backend, version 2 otherwise)."""
    version = version_for(backend)
    backend_id = BACKENDS.index(backend)
    shape = tuple(int(d) for d in shape)
    if len(shape) > MAX_NDIM:
        raise ValueError(f"at most {MAX_NDIM} dims, got {len(shape)}")
    if any(not 1 <= d <= MAX_DIM for d in shape):
        raise ValueError(f"dims must be in [1, {MAX_DIM}], got {shape}")
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"1 to {MAX_SEGMENTS} segments, got {len(segments)}")
    header = bytearray((MAGIC | version, len(shape) | (len(segments) - 1) << 3 | backend_id << 5))
    for d in shape:
        _put_varint(header, d)
    for segment in segments[:-1]:
        _put_varint(header, len(segment))
    payload = b"".join(segments)
    crc = binascii.crc_hqx(payload, binascii.crc_hqx(bytes(header), 0))
    return bytes(header) + crc.to_bytes(2, "big") + payload


def unpack(
    data: bytes,
    *,
    ndim: int | None = None,
    num_segments: int | None = None,
    max_elements: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backends: Collection[str] | None = (DEFAULT_BACKEND,),
) -> Bitstream:
    """Parse and validate a bitstream; anything malformed raises :class:`BitstreamError`.

    ``ndim``/``num_segments`` pin what the receiving model expects, ``backends`` the coders it can decode
    (None: any), and ``max_elements`` bounds the latent size, so no allocation downstream is sized by an
    unchecked header field.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a bitstream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise BitstreamError(f"bitstream of {len(data)} bytes exceeds the limit of {max_bytes}")
    if len(data) < 4:
        raise BitstreamError(f"truncated bitstream: {len(data)} bytes is shorter than any header")
    if data[0] & 0xF0 != MAGIC:
        raise BitstreamError(f"not a splitbench bitstream (first byte 0x{data[0]:02x})")
    version = data[0] & 0x0F
    if not 1 <= version <= VERSION:
        raise BitstreamError(f"unsupported bitstream version {version} (this reader: 1 to {VERSION})")
    flags = data[1]
    backend_id = flags >> 5
    if version == 1 and backend_id:
        raise BitstreamError("corrupt bitstream: reserved header bits are set")
    if version == 2 and not 0 < backend_id < len(BACKENDS):  # backend 0 is always written as version 1
        raise BitstreamError(f"corrupt bitstream: backend id {backend_id} is not one of 1 to {len(BACKENDS) - 1}")
    got_ndim, got_segments = flags & 0x07, (flags >> 3 & 0x03) + 1
    if ndim is not None and got_ndim != ndim:
        raise BitstreamError(f"bitstream has a {got_ndim}-D shape, this model expects {ndim}-D")
    if num_segments is not None and got_segments != num_segments:
        raise BitstreamError(f"bitstream has {got_segments} segments, this model expects {num_segments}")
    pos = 2
    shape = []
    for i in range(got_ndim):
        dim, pos = _get_varint(data, pos, f"dim {i}")
        if not 1 <= dim <= MAX_DIM:
            raise BitstreamError(f"corrupt bitstream: dim {i} = {dim} is outside [1, {MAX_DIM}]")
        shape.append(dim)
    lengths = []
    for i in range(got_segments - 1):
        length, pos = _get_varint(data, pos, f"segment {i} length")
        lengths.append(length)
    if pos + 2 > len(data):
        raise BitstreamError("truncated bitstream: header ends before its checksum")
    crc_stored = int.from_bytes(data[pos : pos + 2], "big")
    header, payload = data[:pos], data[pos + 2 :]
    if sum(lengths) > len(payload):
        raise BitstreamError(
            f"truncated bitstream: segments need {sum(lengths)}+ bytes, payload has {len(payload)}"
        )
    if binascii.crc_hqx(payload, binascii.crc_hqx(header, 0)) != crc_stored:
        raise BitstreamError("corrupt or truncated bitstream: checksum mismatch")
    backend = BACKENDS[backend_id]
    if backends is not None and backend not in backends:
        raise BitstreamError(f"bitstream coded by {backend}; this model decodes {', '.join(backends)} streams")
    if max_elements is not None:
        elements = 1
        for d in shape:
            elements *= d
        if elements > max_elements:
            raise BitstreamError(f"latent shape {tuple(shape)} exceeds the model's limit of {max_elements}")
    segments, start = [], 0
    for length in lengths:
        segments.append(payload[start : start + length])
        start += length
    segments.append(payload[start:])
    return Bitstream(tuple(shape), tuple(segments), backend)


def header_size(data: bytes) -> int:
    """Bytes of container overhead in a valid bitstream (everything but the segments)."""
    return len(data) - sum(len(s) for s in unpack(data, backends=None).segments)
