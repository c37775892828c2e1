"""The full-offloading reference through the edge server: images coded by the torch-free device with JPEG,
decoded and classified by the unsplit model over HTTP, answer as ``splitbench evaluate``'s input-codec pipeline;
corrupt, foreign and oversized images are refused in one line."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from splitbench.errors import SplitbenchError
from splitbench.experiment import validate
from splitbench.runs import Run
from splitbench.runtime.app import ServeSettings, create_app
from splitbench.runtime.client import ClientOptions, run_device
from splitbench.runtime.codec_device import CodecDevice, to_uint8
from splitbench.runtime.codec_server import CodecServer
from splitbench.runtime.dataset_inputs import dataset_samples
from splitbench.runtime.link import Link
from splitbench.runtime.protocol import FINGERPRINT_HEADER, INFER
from splitbench.runtime.serve import ThreadedServer, free_port, load_model
from tests.conftest import save_classifier_run, save_run, tiny_raw

pytestmark = pytest.mark.usefixtures("one_thread")
QUALITY = 30


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory):
    return save_classifier_run(tmp_path_factory.mktemp("codec_runs"))


@pytest.fixture(scope="module")
def codec_server(codec_run):
    return CodecServer(codec_run, "jpeg", max_pixels=64 * 64)


@pytest.fixture(scope="module")
def url(codec_server):
    settings = ServeSettings(port=free_port(), max_batch=8, max_delay_ms=10)
    with ThreadedServer(create_app(codec_server, settings), settings) as served:
        yield served


def post(url: str, body: bytes, fingerprint: str) -> httpx.Response:
    return httpx.post(url + INFER, content=body, headers={FINGERPRINT_HEADER: fingerprint}, timeout=10)


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 30, 200)).save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def test_jpeg_from_the_device_over_http_answers_as_splitbench_evaluate(codec_run, codec_server, url, tmp_path):
    config = validate(tiny_raw("input_codec", method_args={"codec": "jpeg", "quality": QUALITY}))
    samples = dataset_samples("shapes", config.eval.split, config.data.val_samples, config.data.image_size,
                              config.data.seed)
    record = run_device(CodecDevice("jpeg", QUALITY), samples, ClientOptions(url, concurrency=4), Link.build(50, 50))
    assert record["num_images"] == record["answered"] == len(samples) == 40 and record["failed"] == 0
    assert record["device"]["codec"] == "jpeg" and record["latency_ms"]["entropy_encode"]["mean"] > 0

    run = Run(config, codec_run.parent)  # its teacher is the classifier run the server serves
    evaluated = run.evaluate(progress=False, results=tmp_path / "results.jsonl")[0]
    assert record["accuracy"]["top1"] == pytest.approx(evaluated["metrics"]["top1"])
    assert record["accuracy"]["top5"] == pytest.approx(evaluated["metrics"]["top5"])
    pipeline = run.pipeline(torch.device("cpu"))
    try:
        images = torch.stack([torch.from_numpy(s.image) for s in samples])
        payloads = pipeline.mobile(images)
        scores = pipeline.server(payloads).softmax(-1)
    finally:
        pipeline.close()
    assert [e["bytes"]["payload"] for e in record["images"]] == [len(p) for p in payloads]
    assert np.mean([len(p) for p in payloads]) == pytest.approx(evaluated["data_size"]["bytes_mean"])
    top = scores.sort(dim=-1, descending=True, stable=True)
    assert [e["predictions"]["classification"]["classes"] for e in record["images"]] == top.indices[:, :5].tolist()
    served = torch.tensor([e["predictions"]["classification"]["scores"] for e in record["images"]])
    assert torch.allclose(served, top.values[:, :5], atol=1e-6)


def test_a_corrupt_or_foreign_image_is_400_in_one_line(codec_server, url):
    good = jpeg(32, 32)
    cases = [good[:40], b"\x89PNG\r\n\x1a\n" + good[8:], good[:200] + bytes(len(good) - 200), b"not an image"]
    for body in cases:
        response = post(url, body, codec_server.fingerprint)
        assert response.status_code == 400, body[:16]
        assert "\n" not in response.json()["error"]
    assert post(url, good, codec_server.fingerprint).status_code == 200  # the server still answers


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(codec_server, url):
    response = post(url, jpeg(65, 64), codec_server.fingerprint)
    assert response.status_code == 400 and "65x64 exceeds 4096 pixels" in response.json()["error"]
    for side, says in [(5000, "5000x5000 exceeds 4096 pixels"), (30000, "decompression bomb")]:
        bomb = jpeg(8, 8)  # its header (SOF0: height, width) claims side x side: nothing is decoded
        sof = bomb.index(b"\xff\xc0")
        bomb = bomb[: sof + 5] + side.to_bytes(2, "big") * 2 + bomb[sof + 9:]
        response = post(url, bomb, codec_server.fingerprint)  # over Pillow's own limit, its bomb check says so first
        assert response.status_code == 400 and says in response.json()["error"]


def test_mixed_image_sizes_in_one_batch_each_answer_as_alone(codec_server):
    small, large = jpeg(32, 32), jpeg(48, 40)
    together = codec_server.answer([small, large, small]).answers
    alone = [codec_server.answer([p]).answers[0]["classification"] for p in (small, large, small)]
    for a, b in zip(together, alone, strict=True):
        assert a["classification"]["classes"] == b["classes"]
        assert a["classification"]["scores"] == pytest.approx(b["scores"], abs=1e-6)
    together = codec_server.answer([small, large, small])
    assert together.sizes == [2, 1, 2]


def test_the_fingerprint_is_the_network_and_the_codec(codec_run, codec_server, url, tiny_export):
    assert CodecServer(codec_run, "webp").fingerprint != codec_server.fingerprint
    other = save_classifier_run(codec_run.parent.parent / "other", seed=1)
    assert CodecServer(other, "jpeg").fingerprint != codec_server.fingerprint
    assert post(url, jpeg(32, 32), "0" * 64).status_code == 409
    with pytest.raises(SplitbenchError, match="not webp; serve an unsplit run with --codec webp"):
        run_device(CodecDevice("webp", 50), [], ClientOptions(url))


def test_codec_serving_needs_an_unsplit_run_and_a_sized_codec(tmp_path, tiny_export):
    with pytest.raises(SplitbenchError, match="splits the model"):
        CodecServer(save_run(tmp_path), "jpeg")
    with pytest.raises(SplitbenchError, match="bundles and --run are for learned"):
        load_model(tiny_export[1], codec="jpeg")
    with pytest.raises(SplitbenchError, match="--max-pixels goes with --codec"):
        load_model(tiny_export[0], max_pixels=100)
    with pytest.raises(SplitbenchError, match="behind a codec with `splitbench serve RUN --codec jpeg`"):
        load_model(save_classifier_run(tmp_path / "unsplit"))  # a classifier run without --codec


def test_the_device_rounds_pixels_as_the_pipeline():
    from splitbench.pipelines.codec import to_uint8_images

    image = np.random.default_rng(0).random((3, 7, 9), dtype=np.float32)
    image[0, 0, :3] = [0.5 / 255, 1.5 / 255, 1.2]
    assert np.array_equal(to_uint8(image), to_uint8_images(torch.from_numpy(image)[None])[0])


def test_the_codec_device_runs_without_torch_and_codes_the_pipelines_bytes(tmp_path):
    from splitbench.codecs import get_codec
    from splitbench.pipelines.codec import to_uint8_images
    from tests.test_export import run_without_torch

    images = np.random.default_rng(1).random((2, 3, 16, 24), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    result = run_without_torch("""
        import sys
        import numpy as np
        from splitbench.runtime.codec_device import CodecDevice
        device = CodecDevice("jpeg", 30)
        for i, image in enumerate(np.load(sys.argv[1])):
            open(f"{sys.argv[2]}/{i}.jpg", "wb").write(device.encode_timed(image)[0])
        print(sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision", "compressai")))
    """, str(tmp_path / "images.npy"), str(tmp_path))
    assert result.stdout.strip() == "[]"
    expected = [get_codec("jpeg", 30).encode(a) for a in to_uint8_images(torch.from_numpy(images))]
    assert [(tmp_path / f"{i}.jpg").read_bytes() for i in range(2)] == expected


def test_cli_device_with_a_codec_writes_a_record_and_needs_a_bundle_or_a_codec(url, tmp_path, capsys):
    import json

    from splitbench.cli import main

    out = tmp_path / "record.json"
    assert main(["--no-progress", "device", "--codec", "jpeg", "--quality", "30", "--server", url, "--num-samples",
                 "4", "--image-size", "32", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["answered"] == 4 and record["device"]["quality"] == 30
    assert record["latency_ms"]["device_network"]["mean"] == 0
    capsys.readouterr()
    assert main(["device", "--server", url]) == 2
    assert capsys.readouterr().err.startswith("error: pass a bundle, or --codec")
