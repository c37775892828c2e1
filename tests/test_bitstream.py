import binascii
import random

import pytest

from splitbench.compression.bitstream import BACKENDS, Bitstream, BitstreamError, header_size, pack, unpack


def test_round_trip_and_header_size():
    payload = bytes(range(256)) * 3
    data = pack((55, 55), [payload])
    stream = unpack(data, ndim=2, num_segments=1)
    assert stream.shape == (55, 55) and stream.segments == (payload,)
    assert header_size(data) == len(data) - len(payload) == 6  # target: <= 8 bytes


def test_several_segments_and_large_dims():
    data = pack((3, 200, 334), [b"y" * 300, b"", b"z" * 7])
    stream = unpack(data)
    assert stream.shape == (3, 200, 334)
    assert stream.segments == (b"y" * 300, b"", b"z" * 7)


@pytest.mark.parametrize("cut", range(0, 20))
def test_every_truncation_is_rejected(cut):
    data = pack((24, 24), [bytes(range(14))])
    with pytest.raises(BitstreamError):
        unpack(data[:cut])


def test_every_single_byte_corruption_is_rejected():
    data = pack((23, 23), [bytes(random.Random(0).randbytes(200))])
    for position in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            corrupted = bytearray(data)
            corrupted[position] ^= flip
            with pytest.raises(BitstreamError):
                unpack(bytes(corrupted), ndim=2, num_segments=1)


def test_random_garbage_never_passes_or_crashes():
    rng = random.Random(1)
    parsed = 0
    for _ in range(2000):
        blob = rng.randbytes(rng.randrange(0, 64))
        try:
            unpack(blob)
            parsed += 1
        except BitstreamError:
            pass  # any other exception fails the test
    assert parsed == 0
    # Also blobs with a valid magic/version byte, so the checks past the first byte are exercised.
    for _ in range(2000):
        blob = bytes([0xB1]) + rng.randbytes(rng.randrange(0, 64))
        with pytest.raises(BitstreamError):
            unpack(blob)


def test_limits_and_expectations():
    data = pack((100, 100), [b"x"])
    with pytest.raises(BitstreamError, match="exceeds the model's limit"):
        unpack(data, max_elements=9999)
    with pytest.raises(BitstreamError, match="expects 3-D"):
        unpack(data, ndim=3)
    with pytest.raises(BitstreamError, match="this model expects 2"):
        unpack(data, num_segments=2)
    with pytest.raises(BitstreamError, match="exceeds the limit"):
        unpack(data, max_bytes=5)
    with pytest.raises(BitstreamError, match="not a splitbench bitstream"):
        unpack(b"\x00" + data[1:])
    with pytest.raises(BitstreamError, match="version"):
        unpack(bytes([0xB7]) + data[1:])
    with pytest.raises(BitstreamError, match="is bytes"):
        unpack("not bytes")  # type: ignore[arg-type]


def test_pack_rejects_what_it_cannot_represent():
    with pytest.raises(ValueError):
        pack((0, 5), [b""])
    with pytest.raises(ValueError):
        pack((5,), [b""] * 5)


# Streams written before the backend field existed (version 1), byte for byte.
VERSION_1 = {((55, 41), (b"abc", b"xy")): b"\xb1\n7)\x03h.abcxy",
             ((3, 200, 334), (b"yyy",)): b"\xb1\x03\x03\xc8\x01\xce\x02i]yyy"}


@pytest.mark.parametrize(("stream", "data"), VERSION_1.items())
def test_compressai_streams_are_still_version_1_byte_for_byte(stream, data):
    shape, segments = stream
    assert pack(shape, list(segments)) == data
    assert unpack(data) == Bitstream(shape, segments, "compressai")


def test_the_backend_travels_in_the_header_at_no_cost():
    payload = bytes(range(40))
    old, new = pack((7, 7), [payload]), pack((7, 7), [payload], "constriction")
    assert (old[0], new[0]) == (0xB1, 0xB2) and len(old) == len(new) and header_size(new) == header_size(old)
    assert unpack(new, backends=BACKENDS) == Bitstream((7, 7), (payload,), "constriction")
    with pytest.raises(BitstreamError, match="coded by constriction"):
        unpack(new)  # a reader says which coders it decodes; the default is CompressAI's only
    with pytest.raises(ValueError, match="unknown backend"):
        pack((7, 7), [payload], "zstd")


@pytest.mark.parametrize("backend_id", [0, 2, 7])
def test_a_version_2_stream_must_name_a_backend_other_than_compressai(backend_id):
    header = bytes((0xB2, 2 | backend_id << 5, 7, 7))
    data = header + binascii.crc_hqx(b"x", binascii.crc_hqx(header, 0)).to_bytes(2, "big") + b"x"
    with pytest.raises(BitstreamError, match="backend id"):
        unpack(data, backends=None)
