"""Standard image codecs: round trips on real photos, agreement with the libraries themselves,
rate monotonicity, hostile bitstreams, the registry, optional backends and the process pool."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from splitbench.codecs import (
    CODECS,
    CodecError,
    CodecUnavailableError,
    encode_decode_many,
    get_codec,
    list_codecs,
)
from splitbench.codecs.base import unpack_sized
from splitbench.codecs.samples import psnr, sample_photos
from splitbench.codecs.yuv import rgb_to_yuv420, yuv420_to_rgb
from splitbench.errors import SplitbenchError

pytest.importorskip("skimage", reason="the test photos come from scikit-image")

# Codecs that wrap a raw elementary stream in the splitbench container (size + CRC).
CONTAINER_CODECS = {"hevc", "vvc"}
# Qualities from the lowest rate to the highest (QP and zlib level run the other way).
SWEEPS = {
    "jpeg": (20, 50, 90),
    "webp": (20, 50, 90),
    "avif": (20, 50, 80),
    "jpegxl": (20, 50, 90),
    "png": (9, 1),
    "hevc": (37, 29, 22),
    "bpg": (37, 29, 22),
    "vvc": (37, 32, 27),
}
PSNR_FLOOR_DB = 29.0  # every lossy codec at its default (mid) quality on these 224² photos clears ~30.5 dB


def build(name: str, quality: float | None = None, **options):
    """The codec, or a skip naming the missing backend (only bpg's tools are missing here)."""
    factory = CODECS.get(name)
    try:
        return factory(factory.default_quality if quality is None else quality, **options)
    except CodecUnavailableError as error:
        pytest.skip(f"{name} backend not installed: {error}")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return sample_photos(224)


def test_every_codec_has_a_sweep_and_help():
    assert set(list_codecs()) == set(SWEEPS)
    for name, text in CODECS.describe().items():
        assert "quality" in text.lower() or "qp" in text.lower(), name


@pytest.mark.parametrize("name", list_codecs())
def test_round_trip_shape_and_psnr(name, photos):
    codec = build(name)
    for image in photos:
        data = codec.encode(image)
        assert isinstance(data, bytes) and data
        decoded = codec.decode(data)
        assert decoded.shape == image.shape and decoded.dtype == np.uint8
        if name == "png":
            np.testing.assert_array_equal(decoded, image)
        else:
            assert psnr(image, decoded) > PSNR_FLOOR_DB, (name, len(data))


@pytest.mark.parametrize("name", list_codecs())
def test_odd_sizes_and_grayscale(name, photos):
    codec = build(name)
    odd = photos[1][:101, :77]
    decoded = codec.decode(codec.encode(odd))
    assert decoded.shape == odd.shape
    assert psnr(odd, decoded) > PSNR_FLOOR_DB - 2
    for tiny in (photos[1][:1, :1], photos[1][:3, :20]):  # below the video coders' 16-sample minimum
        decoded = codec.decode(codec.encode(tiny))
        assert decoded.shape == tiny.shape and psnr(tiny, decoded) > 20
    plane = photos[2][:, :, 1]
    gray = codec.decode_gray(codec.encode_gray(plane))
    assert gray.shape == plane.shape and gray.dtype == np.uint8
    assert psnr(plane, gray) > PSNR_FLOOR_DB


@pytest.mark.parametrize("name", list_codecs())
def test_quality_sweep_is_monotone_in_bytes(name, photos):
    sizes = [len(build(name, q).encode(photos[0])) for q in SWEEPS[name]]
    assert all(a < b for a, b in pairwise(sizes)), sizes


@pytest.mark.parametrize("name", list_codecs())
def test_corrupt_and_truncated_bitstreams_raise_codec_error(name, photos):
    codec = build(name)
    data = codec.encode(photos[1])
    middle = len(data) // 2
    bad = {
        "half": data[:middle],
        "ten bytes": data[:10],
        "empty": b"",
        "garbage": np.random.default_rng(0).bytes(len(data)),
        "zeroed header": bytes(16) + data[16:],
        "not bytes": "not a bitstream",
    }
    if name in CONTAINER_CODECS:  # the CRC also catches damage that the decoder would not notice
        bad["last byte cut"] = data[:-1]
        bad["bit flip"] = data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]
    for what, corrupt in bad.items():
        with pytest.raises(CodecError):
            codec.decode(corrupt)
            pytest.fail(f"{name} decoded a {what} bitstream")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("jpeg", {"quality": 75, "subsampling": "4:2:0"}),
        ("webp", {"quality": 75, "method": 4}),
        ("avif", {"quality": 50, "speed": 6, "subsampling": "4:2:0", "max_threads": 1}),
        ("jpegxl", {"quality": 75, "effort": 7, "num_threads": 1}),
        ("png", {"compress_level": 6}),
    ],
)
def test_pillow_codecs_equal_pillow_itself(name, options, photos):
    codec = build(name)
    if name == "jpegxl":
        pytest.importorskip("pillow_jxl")
    image = photos[3]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=codec.pil_format, **options)
    assert codec.encode(image) == buffer.getvalue()
    with Image.open(io.BytesIO(buffer.getvalue())) as img:
        expected = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(codec.decode(buffer.getvalue()), expected)


def _ffmpeg() -> str:
    return pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()


def _run(args: list[str], stdin: bytes) -> bytes:
    result = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-loglevel", "error", *args], input=stdin, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_hevc_equals_ffmpeg_libx265_and_decoder(photos):
    """Our payload is exactly what the ffmpeg binary's libx265 writes from the same YUV, and that
    binary's HEVC decoder yields the same picture; the container adds 8 bytes and nothing else."""
    codec = build("hevc")
    image = photos[2]
    data = codec.encode(image)
    height, width, payload = unpack_sized(data, "hevc")
    assert (height, width) == (224, 224) and len(data) == len(payload) + 8
    yuv = b"".join(p.astype(np.uint8).tobytes() for p in rgb_to_yuv420(image, bits=8))
    raw_in = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "224x224", "-r", "25", "-i", "pipe:0"]
    x265 = ["-c:v", "libx265", "-preset", "medium", "-x265-params", codec.x265_params()]
    assert _run([*raw_in, *x265, "-frames:v", "1", "-f", "hevc", "pipe:1"], yuv) == payload
    assert b"x265 (build" not in payload  # info=0: no settings SEI
    decoded = np.frombuffer(
        _run(["-f", "hevc", "-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"], payload),
        np.uint8,
    )
    y = decoded[: 224 * 224].reshape(224, 224)
    cb, cr = decoded[224 * 224 :].reshape(2, 112, 112)
    np.testing.assert_array_equal(codec.decode(data), yuv420_to_rgb(y, cb, cr, bits=8))


def test_vvc_equals_ffmpeg_libvvenc_and_an_independent_decoder(photos):
    """Payload == a direct ffmpeg/libvvenc run; PyAV's own libavcodec build decodes it to the same picture."""
    av = pytest.importorskip("av")
    codec = build("vvc")
    assert codec.describe()["preset"] == "faster"
    image = photos[0]
    data = codec.encode(image)
    _, _, payload = unpack_sized(data, "vvc")
    yuv = b"".join(p.astype("<u2").tobytes() for p in rgb_to_yuv420(image, bits=10))
    raw_in = ["-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", "224x224", "-r", "25", "-i", "pipe:0"]
    vvenc = ["-c:v", "libvvenc", "-qp", "32", "-preset", "faster", "-threads", "1"]
    assert _run([*raw_in, *vvenc, "-frames:v", "1", "-f", "vvc", "pipe:1"], yuv) == payload
    if "vvc" not in av.codecs_available:
        pytest.skip("this PyAV build has no VVC decoder")
    ctx = av.CodecContext.create("vvc", "r")
    (frame,) = [*ctx.decode(av.Packet(payload)), *ctx.decode(None)]
    planes = [np.frombuffer(p, "<u2").reshape(p.height, p.line_size // 2)[:, : p.width] for p in frame.planes]
    np.testing.assert_array_equal(codec.decode(data), yuv420_to_rgb(*planes, bits=10))


def test_unknown_codec_lists_known_ones():
    with pytest.raises(SplitbenchError, match="known: .*jpeg.*webp") as info:
        get_codec("jpeg2000", 50)
    assert isinstance(info.value, KeyError)


def test_jpeg_quality_zero_is_libjpegs_lowest_quality(photos):
    """libjpeg clamps quality 0 to 1, so a sweep can start every codec at 0: the same bytes as quality 1."""
    assert get_codec("jpeg", 0).encode(photos[0]) == get_codec("jpeg", 1).encode(photos[0])
    assert get_codec("jpeg", 0).encode(photos[0]) != get_codec("jpeg", 5).encode(photos[0])


@pytest.mark.parametrize(
    ("name", "quality"),
    [
        ("jpeg", -1),
        ("jpeg", 101),
        ("webp", -1),
        ("hevc", 52),
        ("hevc", 29.5),
        ("vvc", 64),
        ("png", 10),
        ("jpeg", True),
        ("jpeg", float("nan")),
        ("jpeg", "75"),
    ],
)
def test_out_of_range_quality_is_rejected(name, quality):
    with pytest.raises(ValueError, match="quality"):
        get_codec(name, quality)


def test_codec_options_are_validated_and_described():
    with pytest.raises(ValueError, match="preset"):
        get_codec("vvc", 32, preset="warp")
    with pytest.raises(ValueError, match="preset"):
        get_codec("hevc", 29, preset="warp")
    assert build("vvc", 32, preset="fast").describe()["preset"] == "fast"
    assert build("hevc", 29, preset="fast").describe()["preset"] == "fast"
    for name in list_codecs():
        factory = CODECS.get(name)
        try:
            codec = factory(factory.default_quality)
        except CodecUnavailableError:
            continue
        record = codec.describe()
        assert record["codec"] == name and record["quality"] == factory.default_quality
        assert pickle.loads(pickle.dumps(codec)).describe() == record


def test_bpg_without_its_tools_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CodecUnavailableError, match="bpgenc and bpgdec.*hevc"):
        get_codec("bpg", 29)


def _stub(path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)


def test_bpg_runs_the_tools_and_cleans_up(monkeypatch, tmp_path, photos):
    """Stand-in bpgenc/bpgdec (they copy a PNG through) exercise the subprocess path end to end."""
    tools, scratch = tmp_path / "bin", tmp_path / "tmp"
    tools.mkdir()
    scratch.mkdir()
    copy = """
        import shutil, sys
        args = sys.argv[1:]
        out = args[args.index("-o") + 1]
        assert "{flag}" in args, args
        shutil.copyfile(args[-1], out)
    """
    _stub(tools / "bpgenc", copy.format(flag="-q"))
    _stub(tools / "bpgdec", copy.format(flag="-o"))
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    codec = get_codec("bpg", 29)
    image = photos[0][:50, :60]
    np.testing.assert_array_equal(codec.decode(codec.encode(image)), image)
    assert not list(scratch.iterdir())
    _stub(tools / "bpgdec", "import sys\nsys.exit('bpgdec: invalid BPG file')\n")
    with pytest.raises(CodecError, match="invalid BPG file"):
        codec.decode(b"BPG\xfb garbage")
    assert not list(scratch.iterdir())


def test_missing_python_backend_fails_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(CodecUnavailableError, match="pip install av"):
        get_codec("hevc", 29)


def test_import_needs_only_pillow():
    """With every optional backend hidden, the package imports, lists all codecs and JPEG works."""
    script = """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"av", "pillow_jxl", "imageio_ffmpeg", "skimage", "torch"}:
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        import numpy as np
        import splitbench.codecs as codecs
        assert "hevc" in codecs.list_codecs() and "vvc" in codecs.list_codecs()
        jpeg = codecs.get_codec("jpeg", 75)
        assert jpeg.decode(jpeg.encode(np.zeros((8, 8, 3), np.uint8))).shape == (8, 8, 3)
        for name, package in (("hevc", "av"), ("jpegxl", "pillow-jxl-plugin"), ("vvc", "imageio-ffmpeg")):
            try:
                codecs.get_codec(name, 20)
            except codecs.CodecUnavailableError as error:
                assert f"pip install {package}" in str(error), error
            else:
                raise AssertionError(name)
        print(" ".join(codecs.available_codecs()))
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    available = set(result.stdout.split())
    assert {"jpeg", "webp", "png"} <= available and not available & {"hevc", "jpegxl", "vvc"}


@pytest.mark.parametrize("name", ["jpeg", "hevc"])
def test_process_pool_equals_in_process(name, photos):
    codec = build(name)
    images = [photos[i % 4][: 200 + i, : 190 + 2 * i] for i in range(6)]  # distinct sizes expose reordering
    local = encode_decode_many(codec, images, workers=1)
    pooled = encode_decode_many(codec, images, workers=2)
    assert (local.workers, pooled.workers) == (1, 2)
    assert [s.data for s in pooled.samples] == [s.data for s in local.samples]
    for a, b, image in zip(pooled.samples, local.samples, images, strict=True):
        np.testing.assert_array_equal(a.decoded, b.decoded)
        assert a.decoded.shape == image.shape and a.encode_seconds > 0 and a.decode_seconds > 0
    assert encode_decode_many(codec, images[:1]).workers == 1  # never more workers than images
    assert encode_decode_many(codec, images).workers == min(os.cpu_count() or 1, len(images))
