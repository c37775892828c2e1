"""CompressAI's rANS called with its tables converted once: CompressAI's strings, byte for byte, in less time;
and the bits it codes symbols with, the entropy models' rate estimate.

CompressAI's ``EntropyModel.compress``/``decompress`` hand its C++ coder (``compressai.ans``) the whole CDF
table as Python lists again for every sample (for a 24-channel prior with wide tables that costs as much as
coding the sample) and build every sample's table indexes again. :class:`RansCoder` holds the lists of one
set of tables and the index lists of each latent shape, and calls the same C++ functions with the same
arguments, so its strings are CompressAI's (``tests/test_latent_coder.py`` compares them with
``EntropyBottleneck.compress`` and ``GaussianConditional.compress``). Symbols are the integers
``EntropyModel.quantize(y, "symbols", means)`` gives; escapes are the C++ coder's own.

The decoder has no bounds checks: every string it is given is padded with zero bytes first (:func:`pad_for_decoder`,
also used in front of CompressAI's own decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

# Zero bytes appended to a payload before it reaches CompressAI's C++ rANS decoder. The decoder reads at most
# one 32-bit word per symbol on its normal path and has no bounds checks, so a payload that passed the checksum
# but ends early cannot make it read outside our buffer.
PAD_BYTES_PER_SYMBOL = 8
MAX_CACHED_SHAPES = 16
PRECISION = 16  # CompressAI's entropy_coder_precision: a table symbol of frequency f costs log2(2**16 / f) bits
BYPASS_BITS = 4  # CompressAI's bypass_precision: an escaped value's chunk count and raw value, 4 bits a chunk
MAX_BYPASS_CHUNKS = 8  # an escape's raw value is a uint32


def pad_for_decoder(segment: bytes, symbols: int) -> bytes:
    """``segment`` with enough zero bytes after it that the C++ decoder cannot read past the buffer."""
    return segment + bytes(PAD_BYTES_PER_SYMBOL * symbols + 64)


class RansCoder:
    """One set of CompressAI tables (quantized CDFs, their lengths, offsets) as the lists the C++ coder takes."""

    FIELDS = ("quantized_cdf", "cdf_length", "offset")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> RansCoder:
        return cls(*(arrays[k] for k in cls.FIELDS))

    def __init__(self, quantized_cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray) -> None:
        from compressai import ans

        self.cdf = np.asarray(quantized_cdf, np.int32).tolist()
        self.cdf_length = np.asarray(cdf_length, np.int32).reshape(-1).tolist()
        self.offset = np.asarray(offset, np.int32).reshape(-1).tolist()
        self._encoder, self._decoder = ans.RansEncoder(), ans.RansDecoder()
        self._channel_indexes: dict[tuple[int, ...], list[int]] = {}
        cdf = np.asarray(quantized_cdf, np.int64)
        with np.errstate(divide="ignore"):  # entries past a table's length: never looked up
            self._cost = PRECISION - np.log2(np.diff(cdf, axis=1).clip(min=0))  # bits of each (table, symbol)
        self._top = np.asarray(cdf_length, np.int32).reshape(-1) - 2  # each table's escape symbol
        self._offset = np.asarray(offset, np.int32).reshape(-1)

    def channel_indexes(self, shape: Sequence[int]) -> list[int]:
        """A factorized prior's table index of every value of one sample of ``shape`` (C, ...): its channel."""
        key = tuple(int(d) for d in shape)
        if key not in self._channel_indexes:
            if len(self._channel_indexes) >= MAX_CACHED_SHAPES:
                self._channel_indexes.clear()
            per_channel = int(np.prod(key[1:], dtype=np.int64))
            self._channel_indexes[key] = np.repeat(np.arange(key[0], dtype=np.int32), per_channel).tolist()
        return self._channel_indexes[key]

    def encode(self, symbols: torch.Tensor, indexes: torch.Tensor | None = None) -> list[bytes]:
        """One string per sample of ``symbols`` (B, C, ...), each value coded by the table ``indexes`` names (same
        shape), or by its channel's table where ``indexes`` is None (a factorized prior)."""
        rows = symbols.detach().to("cpu", torch.int32).flatten(1).numpy()  # numpy's tolist is the faster
        lists = self._indexes(tuple(symbols.shape), indexes)
        return [self._encoder.encode_with_indexes(s.tolist(), lists(i), self.cdf, self.cdf_length, self.offset)
                for i, s in enumerate(rows)]

    def decode(self, strings: Sequence[bytes], shape: Sequence[int], indexes: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The int32 symbols (B, *shape) of one string per sample, by ``indexes`` (B, *shape) or each value's
        channel; every string is padded before the C++ decoder sees it."""
        count = int(np.prod(shape, dtype=np.int64))
        lists = self._indexes((len(strings), *shape), indexes)
        out = np.empty((len(strings), count), np.int32)
        for i, s in enumerate(strings):  # np.fromiter: 5x faster than torch.tensor on a list
            out[i] = np.fromiter(self._decoder.decode_with_indexes(pad_for_decoder(s, count), lists(i), self.cdf,
                                                                   self.cdf_length, self.offset), np.int32, count)
        return torch.from_numpy(out).view(len(strings), *shape)

    def bits(self, symbols: torch.Tensor, indexes: torch.Tensor | None = None) -> torch.Tensor:
        """The bits per sample (float64, [B]) :meth:`encode` codes ``symbols`` with: −log2 of each symbol's 16-bit
        quantized probability, and for a value outside its table (an escape) the escape symbol's plus 4 bits per
        bypass chunk (the chunk count in pieces of 15, then the raw value's 4-bit chunks), as CompressAI's C++
        encoder writes them; the final flush (its 32-bit state and the last partial word: 4 to 8 bytes a string)
        is not counted.

        This is the entropy model's rate estimate for the model the coder really uses, so it tracks the real
        bytes to their flush; the continuous likelihoods the model trains with differ from it by the tables'
        16-bit rounding and their escape scheme (``tests/test_latent_coder.py`` bounds both gaps). Table look-ups
        on the integer symbols, summed over each sample's own values: a sample's estimate does not depend on its
        batch."""
        values = symbols.detach().to("cpu", torch.int32).numpy()
        if indexes is None:  # a factorized prior: each value's table is its channel's
            tables = np.arange(values.shape[1], dtype=np.int32).reshape((1, -1) + (1,) * (values.ndim - 2))
        else:
            tables = indexes.detach().to("cpu", torch.int32).numpy()
        top = self._top[tables]
        value = values - self._offset[tables]
        escaped = value.view(np.uint32) >= top.view(np.uint32)  # below 0 or at/above the escape symbol
        bits = self._cost.take(tables * self._cost.shape[1] + np.where(escaped, top, value))  # flat: faster
        if escaped.any():
            top = np.broadcast_to(top, value.shape)[escaped].astype(np.int64)
            value = value[escaped].astype(np.int64)
            raw = np.where(value < 0, -2 * value - 1, 2 * (value - top))
            chunks = sum((raw >> (BYPASS_BITS * j) > 0).astype(np.int64) for j in range(MAX_BYPASS_CHUNKS))
            bits[escaped] += BYPASS_BITS * (chunks // ((1 << BYPASS_BITS) - 1) + 1 + chunks)
        return torch.from_numpy(bits.reshape(len(values), -1).sum(1))

    def _indexes(self, shape: Sequence[int], indexes: torch.Tensor | None) -> Callable[[int], list[int]]:
        """Sample i's table index list, checked against the tables (the C++ coder checks none of them)."""
        if indexes is None:
            if shape[1] != len(self.cdf):
                raise ValueError(f"{shape[1]} channels for a factorized prior of {len(self.cdf)}")
            shared = self.channel_indexes(shape[1:])
            return lambda i: shared
        rows = indexes.detach().to("cpu", torch.int32).flatten(1).numpy()
        if tuple(indexes.shape) != tuple(shape) or rows.size and not 0 <= int(rows.min()) <= int(rows.max()) \
                < len(self.cdf):
            raise ValueError(f"table indexes of shape {tuple(indexes.shape)} for symbols {tuple(shape)} and "
                             f"{len(self.cdf)} tables")
        return lambda i: rows[i].tolist()
