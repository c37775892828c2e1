import random

import pytest

from splitbench.compression.bitstream import BitstreamError, header_size, pack, unpack


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
