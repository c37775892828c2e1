"""splitbench export and the torch-free device: the bundle, its checks, and a server that decodes it exactly.

The run is a tiny Entropic Student (fp) with random weights and its coder tables built, saved as training
saves a run; nothing trains. Its encoder's output is widened so the latent spans many symbols (some escaped).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import save_run, tiny_raw

from splitbench.cli import main
from splitbench.compression.bitstream import BitstreamError, unpack
from splitbench.compression.constriction_coder import ConstrictionCoder
from splitbench.data import get_dataset
from splitbench.errors import SplitbenchError
from splitbench.experiment import validate
from splitbench.hashing import sha256_file
from splitbench.pipelines import LearnedPipeline
from splitbench.runtime.bundle import MANIFEST, NETWORK, TABLES, BundleError, read_manifest
from splitbench.runtime.export import export_run
from splitbench.runtime.fingerprint import fingerprint
from splitbench.runtime.model import pipeline_fingerprint, run_fingerprint
from splitbench.runtime.server import Server

pytest.importorskip("onnxruntime")
pytest.importorskip("constriction")
pytestmark = pytest.mark.usefixtures("one_thread")

NUM_IMAGES = 16
# Run python with torch, torchvision and compressai unimportable: what a device without them sees.
NO_TORCH = textwrap.dedent("""
    import sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "torchvision", "compressai"):
                raise ImportError(f"{name} is not installed on this device")
    sys.meta_path.insert(0, NoTorch())
""")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory) -> Path:
    return export_run(run_dir, tmp_path_factory.mktemp("bundles") / "fp")


@pytest.fixture(scope="module")
def server(run_dir) -> Server:
    return Server(run_dir)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = get_dataset("shapes", "val", task="classification", image_size=32, num_samples=NUM_IMAGES)
    return torch.stack([data[i][0] for i in range(NUM_IMAGES)])


def run_without_torch(script: str, *args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).parents[1]
    result = subprocess.run([sys.executable, "-c", NO_TORCH + textwrap.dedent(script), *args], capture_output=True,
                            text=True, cwd=root, env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


# ---------------------------------------------------------------- the bundle


def test_export_writes_a_bundle_whose_manifest_hashes_its_files(bundle):
    import onnx

    assert sorted(p.name for p in bundle.iterdir()) == sorted([NETWORK, TABLES, MANIFEST])
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["files"] == {name: sha256_file(bundle / name) for name in (NETWORK, TABLES)}
    assert read_manifest(bundle) == manifest
    assert (manifest["method"], manifest["variant"], manifest["backbone"]) == ("entropic_student", "fp", "resnet10n")
    assert manifest["input"]["range"] == [0.0, 1.0] and manifest["input"]["height"] == 32
    assert manifest["normalization"]["in_graph"] and len(manifest["normalization"]["mean"]) == 3
    assert manifest["bitstream"] == {"container_version": 2, "backend": "constriction", "dims": "image (h, w)",
                                     "segments": 1}
    assert manifest["network"]["max_abs_diff_vs_torch"] < 1e-4
    onnx.checker.check_model(onnx.load(str(bundle / NETWORK)), full_check=True)
    with np.load(bundle / TABLES, allow_pickle=False) as tables:
        assert sorted(tables.files) == ["cdf_length", "medians", "offset", "quantized_cdf"]
        assert tables["quantized_cdf"].dtype == np.int32 and tables["medians"].dtype == np.float32


@pytest.mark.parametrize("name", [NETWORK, TABLES])
def test_a_modified_file_is_rejected_by_name(bundle, tmp_path, name):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} was modified") as error:
        read_manifest(copy)
    assert "\n" not in str(error.value)
    (copy / name).unlink()
    with pytest.raises(BundleError, match=f"lacks {name}"):
        read_manifest(copy)


# ---------------------------------------------------------------- device without torch, server with it


def test_the_device_without_torch_codes_what_the_server_decodes_exactly(bundle, server, images, tmp_path):
    np.save(tmp_path / "images.npy", images.numpy())
    result = run_without_torch("""
        import sys
        from pathlib import Path
        import numpy as np
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch imported although it is blocked")
        from splitbench.runtime.device import Device
        device = Device(sys.argv[1])
        streams = device.encode(np.load(sys.argv[2]))
        for i, stream in enumerate(streams):
            (Path(sys.argv[3]) / f"{i}.bin").write_bytes(stream)
        print(sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision", "compressai")))
    """, str(bundle), str(tmp_path / "images.npy"), str(tmp_path))
    assert result.stdout.strip() == "[]"
    streams = [(tmp_path / f"{i}.bin").read_bytes() for i in range(NUM_IMAGES)]
    assert all(unpack(s, backends=None).backend == "constriction" for s in streams)

    pipeline = server.pipeline  # the `splitbench evaluate` path: CompressAI-coded streams
    torch_streams = pipeline.mobile(images)
    with torch.no_grad():
        y = pipeline.trunk.encode(images)
        quantized = pipeline.coder.quantize(y)
        medians = pipeline.coder.entropy_bottleneck._get_medians()
    (group,) = server.decode(streams)
    # ONNX Runtime's latent differs from PyTorch's by float rounding (~1e-7), so a value within that of a
    # rounding boundary may land on the other integer on another CPU; everywhere else the latents are equal.
    ties = ((y - medians).frac().abs() - 0.5).abs() < 1e-4
    assert torch.equal(group.latent[~ties], quantized[~ties])
    predicted, expected = server.predict(streams), pipeline.server(torch_streams)
    if ties.any():
        assert torch.equal(predicted.argmax(1), expected.argmax(1))
    else:
        assert torch.equal(predicted, expected)
    assert len({len(s) for s in streams}) > 1  # the samples really differ
    # Same tables, another coder: the sizes differ only by the coders' flush (a few bytes)
    assert max(abs(len(a) - len(b)) for a, b in zip(streams, torch_streams, strict=True)) <= 8


@pytest.fixture(scope="module")
def constriction_pipeline(server) -> LearnedPipeline:
    """The torch pipeline told to write constriction streams (as the device does)."""
    return LearnedPipeline(server.pipeline.network, backend="constriction")


def test_streams_of_both_coders_decode_in_one_call(server, constriction_pipeline, images):
    pipeline = server.pipeline
    mixed = constriction_pipeline.mobile(images[:2]) + pipeline.mobile(images[2:4])
    assert [unpack(s, backends=None).backend for s in mixed] == ["constriction"] * 2 + ["compressai"] * 2
    # two groups (one per coder) come back as one row per sample, in order
    assert torch.equal(torch.stack(server.predict(mixed)), pipeline.server(pipeline.mobile(images[:4])))


# ---------------------------------------------------------------- the constriction coder


@pytest.fixture(scope="module")
def coder(server) -> ConstrictionCoder:
    return ConstrictionCoder(server.pipeline.coder.tables())


def test_constriction_models_are_compressais_16_bit_tables(coder):
    """Each channel's model puts symbol i at [256·cdf[i], 256·cdf[i+1]) of constriction's 24-bit range: decoding
    one symbol from an ANS state whose low 24 bits are a quantile shows where every boundary lies."""
    import constriction

    tables = coder.tables
    for c, model in enumerate(coder.models):
        cdf = tables.quantized_cdf[c, : tables.cdf_length[c]].astype(np.int64)
        for i in range(1, len(cdf) - 1):
            for quantile, symbol in ((256 * cdf[i] - 1, i - 1), (256 * cdf[i], i)):
                state = constriction.stream.stack.AnsCoder(np.array([quantile, 1 << 31], dtype=np.uint32))
                assert state.decode(model, 1)[0] == symbol


def test_constriction_round_trip_is_lossless_with_escapes(coder, server):
    rng = np.random.default_rng(0)
    symbols = rng.integers(-6, 7, size=(coder.tables.channels, 5, 7)).astype(np.int32)
    symbols[0, 0, 0], symbols[1, 2, 3], symbols[2, 4, 6] = 10_000, -(1 << 29), 1 << 20  # escaped, far out
    assert np.array_equal(coder.decode(coder.encode(symbols), (5, 7)), symbols)
    y = torch.randn(3, coder.tables.channels, 5, 7) * 5
    y[1, 0, 0, 0] = 300.0
    latent_coder = server.pipeline.coder
    strings = latent_coder.compress(y, "constriction")
    assert torch.equal(latent_coder.decompress(strings, (5, 7), "constriction"), latent_coder.quantize(y))


def test_a_corrupt_or_truncated_constriction_stream_is_rejected(server, constriction_pipeline, images):
    stream = constriction_pipeline.mobile(images[:1])[0]
    for position in (len(stream) - 1, len(stream) // 2, 8):
        corrupt = bytearray(stream)
        corrupt[position] ^= 0x04
        with pytest.raises(BitstreamError):
            server.predict([bytes(corrupt)])
    for cut in (len(stream) - 1, len(stream) - 4, 10):
        with pytest.raises(BitstreamError):
            server.predict([stream[:cut]])
    # Past the CRC (a stream crafted to pass it), the decoder itself refuses what cannot be this latent.
    coder = ConstrictionCoder(server.pipeline.coder.tables())
    payload = unpack(stream, backends=None).segments[0]
    shape = server.pipeline.latent_shape((32, 32))
    assert coder.decode(payload, shape).shape[1:] == shape
    with pytest.raises(BitstreamError, match="whole 32-bit words"):
        coder.decode(payload[:-1], shape)
    with pytest.raises(BitstreamError, match="does not end"):
        coder.decode(payload + bytes(8), shape)


# ---------------------------------------------------------------- the fingerprint


def test_the_fingerprint_is_the_run_folders_and_changes_with_a_table(bundle, run_dir, server):
    manifest = read_manifest(bundle)
    assert run_fingerprint(run_dir) == manifest["fingerprint"] == server.fingerprint
    assert server.check_bundle(bundle) == manifest
    cdf = server.pipeline.coder.entropy_bottleneck._quantized_cdf
    cdf[0, 1] += 1
    try:
        assert pipeline_fingerprint(server.pipeline) != manifest["fingerprint"]
    finally:
        cdf[0, 1] -= 1
    arrays = {"a": np.arange(4, dtype=np.int32), "b": np.ones(2, np.float32)}
    assert fingerprint(arrays) == fingerprint(dict(reversed(arrays.items())))
    assert fingerprint(arrays) != fingerprint({**arrays, "a": arrays["a"].astype(np.int64)})


def test_a_server_refuses_a_bundle_of_another_model(bundle, tmp_path):
    other = Server(save_run(tmp_path, seed=1))  # same config, other random weights
    with pytest.raises(SplitbenchError, match="another model"):
        other.check_bundle(bundle)


# ---------------------------------------------------------------- what does not export


def one_line_refusal(run: Path, out: Path, match: str) -> None:
    with pytest.raises(SplitbenchError, match=match) as error:
        export_run(run, out)
    assert "\n" not in str(error.value)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_a_cr_bq_run_exports_and_its_torch_free_streams_are_evaluates(tmp_path, images):
    """CR+BQ's device half: the ONNX network and the numpy 8-bit code, whose default-container streams the run's
    server decodes; they are the torch pipeline's streams up to the two runtimes' float rounding."""
    from conftest import write_run

    from splitbench.runs import Run

    run = Run(validate(tiny_raw("cr_bq", method_args={"channels": 3})), tmp_path / "runs")
    torch.manual_seed(0)
    run_dir = write_run(run, run.structure(torch.device("cpu")).eval())
    bundle = export_run(run_dir, tmp_path / "bundle")
    manifest = read_manifest(bundle)
    assert manifest["coder"]["kind"] == "uint8" and manifest["bitstream"]["container_version"] == 1
    np.save(tmp_path / "images.npy", images.numpy())
    run_without_torch("""
        import sys
        from pathlib import Path
        import numpy as np
        from splitbench.runtime.device import Device
        for i, stream in enumerate(Device(sys.argv[1]).encode(np.load(sys.argv[2]))):
            (Path(sys.argv[3]) / f"{i}.bin").write_bytes(stream)
    """, str(bundle), str(tmp_path / "images.npy"), str(tmp_path))
    streams = [(tmp_path / f"{i}.bin").read_bytes() for i in range(NUM_IMAGES)]
    server = Server(run_dir)
    pipeline = server.pipeline
    torch_streams = pipeline.mobile(images)
    assert [len(s) for s in streams] == [len(s) for s in torch_streams]
    assert len(streams[0]) == 6 + 8 + 3 * 7 * 7  # header + scale, zero point + the 3 × 7 × 7 values
    # The two runtimes' latents differ by float rounding (~1e-7): min/max (the scale) by an ulp, and a value
    # within that of a rounding boundary by one level; every other byte is the same.
    values = np.stack([np.frombuffer(s[14:], np.uint8) for s in streams]).astype(int)
    torch_values = np.stack([np.frombuffer(s[14:], np.uint8) for s in torch_streams]).astype(int)
    assert np.abs(values - torch_values).max() <= 1 and (values != torch_values).mean() < 0.01
    assert {(unpack(s).shape, unpack(s).backend) for s in streams + torch_streams} == {((32, 32), "compressai")}
    (group,) = server.decode(streams)
    (expected,) = server.decode(torch_streams)
    scale = (expected.latent.flatten(1).amax(1) - expected.latent.flatten(1).amin(1)) / 255
    assert ((group.latent - expected.latent).abs().flatten(1).amax(1) <= scale * 1.01).all()
    assert torch.equal(server.predict(streams).argmax(1), pipeline.server(torch_streams).argmax(1))


def test_codecs_and_hyperpriors_are_refused_in_one_line(tmp_path):
    codec = tmp_path / "input_codec-jpeg-resnet10n-q50"
    codec.mkdir()
    config = validate({**tiny_raw("input_codec"), "method_args": {"codec": "jpeg", "quality": 50}})
    (codec / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    one_line_refusal(codec, tmp_path / "codec-bundle", "codecs need no export")
    one_line_refusal(save_run(tmp_path, variant="shp"), tmp_path / "shp-bundle", "not compute bit-identically")


def test_cli_export_of_a_missing_run_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys, run_dir, bundle):
    out = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run folder") and err.count("\n") == 1
    assert not out.exists()
    assert main(["export", str(run_dir), "--out", str(bundle)]) == 2  # an existing bundle is not overwritten
    assert "exists" in capsys.readouterr().err


def test_an_error_mid_export_leaves_nothing(run_dir, tmp_path, monkeypatch):
    import splitbench.runtime.export as export

    def fail(*args, **kwargs):
        raise SplitbenchError("cannot export the device network to ONNX: simulated")

    monkeypatch.setattr(export, "export_onnx", fail)
    one_line_refusal(run_dir, tmp_path / "bundle", "simulated")
