"""A factorized prior coded with constriction: CompressAI's tables and escape scheme, in numpy, without torch.

CompressAI's rANS coder is a torch extension, so a device without torch codes with `constriction`
(its ``stream.queue`` range coder) instead, over the *same* tables: each channel's 16-bit quantized
CDF becomes a ``Categorical(freq / 2**16, perfect=True)`` model. constriction works at 24-bit
precision; with ``perfect=True`` its quantizer returns exactly ``256 · freq`` for such dyadic
probabilities (the unique optimum), so the model is CompressAI's to the bit (``perfect=False``
is not: it reserves a slot per symbol). ``tests/test_export.py`` checks the boundaries of every
channel's model.

Symbols and escapes follow CompressAI: ``symbol = round(y − median)``, ``value = symbol − offset``;
a value outside ``[0, cdf_length − 2)`` is coded as the escape value ``cdf_length − 2`` followed by
its raw value (``2·(value − max)`` above, ``−2·value − 1`` below) in 4-bit chunks, preceded by the
chunk count (in chunks of 15). The order in the stream is per channel: its H·W table symbols, then
its escapes' chunks, so the table symbols code in one vectorised call per channel.

The strings are not CompressAI's (another coder): a stream records which coder wrote it
(:data:`splitbench.compression.bitstream.BACKENDS`), and the server decodes it with this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from splitbench.compression.bitstream import BitstreamError

PRECISION = 16  # CompressAI's entropy_coder_precision: the tables' total mass is 2**16
BYPASS_BITS = 4  # CompressAI's bypass_precision
MAX_BYPASS = (1 << BYPASS_BITS) - 1
MAX_CHUNKS = 8  # 32 raw bits: more than any int32 symbol needs
MAX_SYMBOL = 1 << 30  # |round(y − median)| beyond this is a broken latent, not a code


@dataclass(frozen=True, eq=False)
class FactorizedTables:
    """An EntropyBottleneck's coding tables as numpy arrays (what the device holds and the bundle stores)."""

    quantized_cdf: np.ndarray  # int32 (C, L): each row a CDF of cdf_length[c] entries, 0 … 2**16
    cdf_length: np.ndarray  # int32 (C,)
    offset: np.ndarray  # int32 (C,): the value of table index 0, minus the median
    medians: np.ndarray  # float32 (C,)

    FIELDS = ("quantized_cdf", "cdf_length", "offset", "medians")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FactorizedTables:
        """Tables from a mapping of arrays (a bundle's .npz), checked so that no model is built from nonsense."""
        missing = [k for k in cls.FIELDS if k not in arrays]
        if missing:
            raise ValueError(f"factorized tables lack {', '.join(missing)}")
        tables = cls(np.asarray(arrays["quantized_cdf"], np.int32), np.asarray(arrays["cdf_length"], np.int32),
                     np.asarray(arrays["offset"], np.int32), np.asarray(arrays["medians"], np.float32))
        channels = tables.quantized_cdf.shape[0]
        if tables.quantized_cdf.ndim != 2 or any(a.shape != (channels,) for a in
                                                 (tables.cdf_length, tables.offset, tables.medians)):
            raise ValueError("factorized tables: quantized_cdf must be (C, L) and the others (C,)")
        for c in range(channels):
            n = int(tables.cdf_length[c])
            cdf = tables.quantized_cdf[c, :n] if 3 <= n <= tables.quantized_cdf.shape[1] else None
            if cdf is None or cdf[0] != 0 or cdf[-1] != 1 << PRECISION or (np.diff(cdf) <= 0).any():
                raise ValueError(f"factorized tables: channel {c} has no valid {PRECISION}-bit CDF")
        return tables

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.FIELDS}

    @property
    def channels(self) -> int:
        return int(self.quantized_cdf.shape[0])

    def symbols(self, y: np.ndarray) -> np.ndarray:
        """``round(y − median)`` per channel (channels on axis −3), as int32: what CompressAI codes."""
        view = (-1, 1, 1)
        offsets = np.round(np.asarray(y, np.float32) - self.medians.reshape(view))
        if not np.isfinite(offsets).all() or np.abs(offsets).max(initial=0) >= MAX_SYMBOL:
            raise ValueError("the latent has non-finite or huge values; the device network is broken")
        return offsets.astype(np.int32)

    def dequantize(self, symbols: np.ndarray) -> np.ndarray:
        """``symbol + median``: the latent a decoder returns (float32)."""
        return symbols.astype(np.float32) + self.medians.reshape(-1, 1, 1)


def _raw_chunks(raw: int) -> list[int]:
    """An escape's bypass symbols: the chunk count (in pieces of at most 15), then its 4-bit chunks."""
    count = 0
    while raw >> (count * BYPASS_BITS):
        count += 1
    head, rest = [], count
    while rest >= MAX_BYPASS:
        head.append(MAX_BYPASS)
        rest -= MAX_BYPASS
    head.append(rest)
    return head + [(raw >> (j * BYPASS_BITS)) & MAX_BYPASS for j in range(count)]


class ConstrictionCoder:
    """Codes one sample's symbols (C, H, W) into one string and back, with a range coder over the tables."""

    backend: ClassVar[str] = "constriction"  # the id its streams carry (splitbench.compression.bitstream)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ConstrictionCoder:
        return cls(FactorizedTables.from_arrays(arrays))

    def compress(self, y: np.ndarray) -> list[bytes]:
        """Each sample of a latent batch (B, C, H, W), rounded around the medians and coded on its own."""
        return [self.encode(s) for s in self.tables.symbols(y)]

    def decompress(self, strings: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        """The dequantized latents (B, C, H, W) of one string per sample."""
        return np.stack([self.tables.dequantize(self.decode(s, shape)) for s in strings])

    def __init__(self, tables: FactorizedTables) -> None:
        import constriction  # the runtime extra (torch-free); its submodules are attributes, not importable

        model = constriction.stream.model
        self.tables = tables
        self.models = [model.Categorical(np.diff(tables.quantized_cdf[c, : tables.cdf_length[c]]).astype(np.float64)
                                    / (1 << PRECISION), perfect=True) for c in range(tables.channels)]
        self._bypass = model.Uniform(1 << BYPASS_BITS)
        self._queue = constriction.stream.queue
        self._max_value = tables.cdf_length.astype(np.int64) - 2
        self._offset = tables.offset.astype(np.int64)[:, None]

    def encode(self, symbols: np.ndarray) -> bytes:
        if symbols.ndim != 3 or symbols.shape[0] != self.tables.channels:
            raise ValueError(f"expected symbols of shape ({self.tables.channels}, H, W), got {symbols.shape}")
        # every channel's table values and escapes at once, then one call per channel (the stream's order)
        top = self._max_value[:, None]
        values = symbols.reshape(self.tables.channels, -1).astype(np.int64) - self._offset
        escaped = (values < 0) | (values >= top)
        coded = np.where(escaped, top, values).astype(np.int32)
        escapes = {}
        for c in np.flatnonzero(escaped.any(1)).tolist():
            raws = np.where(values[c] < 0, -2 * values[c] - 1, 2 * (values[c] - top[c]))[escaped[c]].tolist()
            escapes[c] = np.asarray([s for raw in raws for s in _raw_chunks(raw)], np.int32)
        encoder = self._queue.RangeEncoder()
        for c, model in enumerate(self.models):
            encoder.encode(coded[c], model)
            if c in escapes:
                encoder.encode(escapes[c], self._bypass)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        """The symbols (C, H, W) of one string; a string that cannot be this latent is a BitstreamError."""
        if len(data) % 4:
            raise BitstreamError(f"constriction payload of {len(data)} bytes is not whole 32-bit words")
        decoder = self._queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        count = int(shape[0]) * int(shape[1])
        out = np.empty((self.tables.channels, count), np.int64)
        for c, (model, top) in enumerate(zip(self.models, self._max_value.tolist(), strict=True)):
            out[c] = decoder.decode(model, count)
            for i in np.flatnonzero(out[c] == top).tolist():  # each escape's raw value follows its channel
                out[c, i] = self._decode_escape(decoder, top)
        out += self._offset
        if not decoder.maybe_exhausted():
            raise BitstreamError("constriction payload does not end where this latent does")
        if np.abs(out).max(initial=0) >= MAX_SYMBOL:
            raise BitstreamError("constriction payload decodes to out-of-range symbols")
        return out.reshape(self.tables.channels, int(shape[0]), int(shape[1])).astype(np.int32)

    def _decode_escape(self, decoder, top: int) -> int:
        count = 0
        while True:
            piece = int(decoder.decode(self._bypass, 1)[0])
            count += piece
            if count > MAX_CHUNKS:
                raise BitstreamError("corrupt constriction payload: an escape longer than 32 bits")
            if piece != MAX_BYPASS:
                break
        raw = 0
        for j, chunk in enumerate(decoder.decode(self._bypass, count).tolist() if count else []):
            raw |= int(chunk) << (j * BYPASS_BITS)
        return -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + top
