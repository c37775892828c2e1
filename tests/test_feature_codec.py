"""Feature maps through image codecs: signed min–max quantisation, parameters inside the counted
bytes, tile layout, and rejection of corrupt bitstreams."""

from __future__ import annotations

import numpy as np
import pytest

from splitbench.codecs import CODECS, CodecError, CodecUnavailableError, FeatureCodec, get_codec
from splitbench.codecs.features import grid_shape
from splitbench.compression.bitstream import header_size, pack, unpack


def signed_features(channels: int = 24, size: int = 28, seed: int = 0) -> np.ndarray:
    """Smooth, signed, per-channel-scaled features like a conv layer's output; channel 3 is all negative."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(channels, size // 4, size // 4))
    smooth = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + 0.1 * rng.normal(
        size=(channels, size, size)
    )
    feature = smooth * np.linspace(0.5, 3.0, channels)[:, None, None] - 1.0
    feature[3] -= 20.0
    return feature.astype(np.float32)


def codec(name: str, quality: float):
    try:
        return get_codec(name, quality)
    except CodecUnavailableError as error:
        pytest.skip(f"{name} backend not installed: {error}")


def relative_rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)) / b.std())


def test_lossless_round_trip_of_signed_features():
    feature = signed_features()
    assert (feature[3] < 0).all() and feature.min() < 0 < feature.max()
    fc = FeatureCodec(get_codec("png", 6))
    decoded = fc.decode(fc.encode(feature))
    assert decoded.shape == feature.shape and decoded.dtype == np.float32
    span = feature.max(axis=(1, 2)) - feature.min(axis=(1, 2))
    error = np.abs(decoded - feature).max(axis=(1, 2))
    # Only 8-bit rounding is left: half a step of the (outward-rounded float16) range per channel.
    np.testing.assert_array_less(error, span * (0.5 / 255 + 1e-3))
    # Dividing by max alone (the reference tool) clips the all-negative channel to one value.
    naive = np.clip(np.rint(feature[3] / feature[3].max() * 255), 0, 255) / 255 * feature[3].max()
    assert np.abs(naive - feature[3]).max() > 50 * error[3]


@pytest.mark.parametrize(
    ("name", "quality", "bound"),
    [
        ("jpeg", 100, 0.02),
        ("webp", 95, 0.05),
        ("avif", 90, 0.05),
        ("jpegxl", 95, 0.05),
        ("hevc", 12, 0.03),
        ("vvc", 12, 0.03),
    ],
)
def test_high_quality_codecs_reconstruct_signed_features(name, quality, bound):
    feature = signed_features()
    fc = FeatureCodec(codec(name, quality))
    decoded = fc.decode(fc.encode(feature))
    assert decoded.shape == feature.shape and decoded.dtype == np.float32
    assert relative_rmse(decoded, feature) < bound


@pytest.mark.parametrize(
    ("group", "dtype"), [(1, "float16"), (4, "float16"), (None, "float16"), (1, "float32")]
)
def test_normalisation_parameters_are_inside_the_counted_bytes(group, dtype):
    feature = signed_features()
    image_codec = get_codec("jpeg", 90)
    fc = FeatureCodec(image_codec, channels_per_group=group, param_dtype=dtype)
    data = fc.encode(feature)
    stream = unpack(data)
    groups = 24 // (group or 24)
    assert stream.shape == (24, 28, 28)
    assert len(stream.segments[0]) == fc.param_bytes(24) == groups * 2 * np.dtype(dtype).itemsize
    assert len(data) == header_size(data) + fc.param_bytes(24) + len(stream.segments[1])
    # The stored ranges are per group, cover every value (outward rounding) and are tight.
    ranges = np.frombuffer(stream.segments[0], np.dtype(dtype).newbyteorder("<")).astype(np.float64)
    ranges = ranges.reshape(groups, 2)
    grouped = feature.reshape(groups, -1).astype(np.float64)
    low, high = grouped.min(axis=1), grouped.max(axis=1)
    assert (ranges[:, 0] <= low).all() and (ranges[:, 1] >= high).all()
    np.testing.assert_allclose(ranges, np.stack([low, high], axis=1), rtol=2e-3, atol=1e-3)


def test_tiles_hold_one_channel_each_and_constant_channels_survive():
    channels = 5  # a 2×3 grid with one empty tile
    assert grid_shape(channels) == (2, 3) and grid_shape(24) == (5, 5) and grid_shape(1) == (1, 1)
    feature = np.stack([np.full((9, 7), -3.5 + k, np.float32) for k in range(channels)])
    feature[4, 2, 3] = 10.0
    fc = FeatureCodec(get_codec("png", 6))
    decoded = fc.decode(fc.encode(feature))
    np.testing.assert_allclose(decoded, feature, atol=0.01)
    zeros = np.zeros((3, 4, 4), np.float32)
    np.testing.assert_array_equal(fc.decode(fc.encode(zeros)), zeros)


def test_float16_range_overflow_needs_float32():
    feature = signed_features() * 1e4
    with pytest.raises(CodecError, match="float32"):
        FeatureCodec(get_codec("png", 6)).encode(feature)
    fc = FeatureCodec(get_codec("png", 6), param_dtype="float32")
    decoded = fc.decode(fc.encode(feature))
    assert np.abs(decoded - feature).max() < (feature.max() - feature.min()) / 255


def test_corrupt_or_mismatched_feature_bitstreams_are_rejected():
    feature = signed_features()
    fc = FeatureCodec(get_codec("jpeg", 90))
    data = fc.encode(feature)
    middle = len(data) // 2
    bad = [
        data[:middle],
        data[:5],
        data[:-1],
        data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :],
        np.random.default_rng(1).bytes(len(data)),
        b"",
        get_codec("hevc", 29).encode(np.zeros((16, 16, 3), np.uint8)),  # a 2-D image container
        pack((24, 28, 28), [b"\x00" * 96, b"not a jpeg"]),  # valid container, broken image
        pack((24, 28, 28), [np.array([1.0, -1.0] * 24, "<f2").tobytes(), unpack(data).segments[1]]),
    ]
    for corrupt in bad:
        with pytest.raises(CodecError):
            fc.decode(corrupt)
    with pytest.raises(CodecError, match="parameter bytes"):  # the decoder is configured differently
        FeatureCodec(get_codec("jpeg", 90), channels_per_group=4).decode(data)
    for wrong in (np.full((2, 4, 4), np.nan, np.float32), np.zeros((4, 4), np.float32)):
        with pytest.raises(CodecError):
            fc.encode(wrong)


def test_configuration_is_validated_and_described():
    with pytest.raises(ValueError, match="param_dtype"):
        FeatureCodec(get_codec("png", 6), param_dtype="bfloat16")
    with pytest.raises(ValueError, match="channels_per_group"):
        FeatureCodec(get_codec("png", 6), channels_per_group=0)
    with pytest.raises(TypeError):
        FeatureCodec("png")
    record = FeatureCodec(get_codec("webp", 80), channels_per_group=8).describe()
    assert (
        record["codec"] == "webp" and record["channels_per_group"] == 8 and record["param_dtype"] == "float16"
    )
    assert "webp" in CODECS
