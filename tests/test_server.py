"""The HTTP edge server: answers, dynamic batching, and what it refuses (each refusal bounded in requests and time).

Every server here is uvicorn in a thread of this process, bound to 127.0.0.1 on a free port, stopped at the end
of its block.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.data import get_dataset
from splitbench.errors import SplitbenchError
from splitbench.runtime.app import ServeSettings, create_app
from splitbench.runtime.device import Device
from splitbench.runtime.protocol import FINGERPRINT_HEADER, REQUEST_ID_HEADER
from splitbench.runtime.serve import ThreadedServer, free_port, load_model, uvicorn_config
from splitbench.runtime.server import BatchAnswer

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
TIMEOUT = httpx.Timeout(20.0)


@contextlib.contextmanager
def serving(model, manifest=None, **options) -> Iterator[str]:
    settings = ServeSettings(port=free_port(), **options)
    with ThreadedServer(create_app(model, settings, manifest), settings) as url:
        yield url


@pytest.fixture(scope="module")
def device(tiny_export) -> Device:
    return Device(tiny_export[1])


@pytest.fixture(scope="module")
def streams(device) -> list[bytes]:
    data = get_dataset("shapes", "val", task="classification", image_size=32, num_samples=24)
    return device.encode(np.stack([data[i][0].numpy() for i in range(24)]))


@pytest.fixture(scope="module")
def url(tiny_server) -> Iterator[str]:
    with serving(tiny_server, max_batch=8, max_delay_ms=30) as url:
        yield url


def headers(fingerprint: str, **extra: str) -> dict[str, str]:
    return {FINGERPRINT_HEADER: fingerprint, "Content-Type": "application/octet-stream", **extra}


def post(url: str, body: bytes, fingerprint: str, **extra: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/infer", content=body, headers=headers(fingerprint, **extra), timeout=TIMEOUT)


async def post_all(url: str, bodies: list[bytes], fingerprint: str, concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits) as client:
        return await asyncio.gather(*(client.post("/v1/infer", content=b, headers=headers(fingerprint))
                                      for b in bodies))


def classes_and_scores(answer: dict) -> tuple[list[int], np.ndarray]:
    a = answer["classification"]
    return a["classes"], np.asarray(a["scores"])


# ---------------------------------------------------------------- answers


def test_an_answer_is_the_pipelines_prediction_with_timings(url, tiny_server, device, streams):
    assert httpx.get(f"{url}/v1/health").json() == {"status": "ok"}
    model = httpx.get(f"{url}/v1/model").json()
    assert model["fingerprint"] == device.fingerprint and model["tasks"] == ["classification"]
    assert model["classes"][:2] == ["circle", "square"] and model["bitstream"]["container_versions"] == [1, 2]
    response = post(url, streams[0], device.fingerprint, **{REQUEST_ID_HEADER: "img-0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == response.headers[REQUEST_ID_HEADER] == "img-0"
    assert set(body["timing_ms"]) == {"queue", "decode", "network", "total"} and body["bytes"] == len(streams[0])
    logits = tiny_server.predict([streams[0]])[0]
    classes, scores = classes_and_scores(body["predictions"])
    assert classes == logits.argsort(descending=True, stable=True)[:5].tolist()
    assert np.allclose(scores, logits.softmax(-1).sort(descending=True).values[:5].numpy(), atol=1e-6)


def test_concurrent_batched_answers_equal_the_alone_answers(url, tiny_server, device, streams):
    with serving(tiny_server, max_batch=1) as alone_url:
        alone = [post(alone_url, s, device.fingerprint).json() for s in streams]
        assert {a["batch_size"] for a in alone} == {1}
    before = httpx.get(f"{url}/v1/stats").json()["batch_sizes"]
    together = asyncio.run(post_all(url, streams, device.fingerprint, concurrency=len(streams)))
    after = httpx.get(f"{url}/v1/stats").json()["batch_sizes"]
    assert all(r.status_code == 200 for r in together)
    sizes = [r.json()["batch_size"] for r in together]
    assert max(sizes) > 1 and max(int(k) for k in after) > 1 and after != before  # batches really formed
    for a, b in zip(alone, together, strict=True):
        (ca, sa), (cb, sb) = classes_and_scores(a["predictions"]), classes_and_scores(b.json()["predictions"])
        # A batch runs other conv kernels than one image: the scores may differ in the last float bits only.
        assert ca == cb and np.allclose(sa, sb, rtol=1e-5, atol=1e-6)


def test_a_stream_only_the_entropy_decoder_refuses_fails_alone_in_its_batch(tiny_server, streams):
    stream = unpack(streams[0], backends=None)
    crafted = pack(stream.shape, [stream.segments[0] + bytes(8)], stream.backend)  # passes the container's CRC
    tiny_server.check(crafted, 1 << 20)
    out = tiny_server.answer([streams[1], crafted, streams[2]])
    assert isinstance(out.answers[1], BitstreamError) and "does not end" in str(out.answers[1])
    assert [out.answers[0], out.answers[2]] == [tiny_server.answer([s]).answers[0] for s in streams[1:3]]


# ---------------------------------------------------------------- refusals


def fuzzed(streams: list[bytes], count: int, seed: int = 0) -> list[bytes]:
    """Random bytes, bit flips, truncations and header fields a valid stream does not have."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        s = bytearray(streams[i % len(streams)])
        kind = i % 5
        if kind == 0:
            out.append(rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes())
        elif kind == 1:
            for position in rng.integers(0, len(s), int(rng.integers(1, 4))):
                s[position] ^= 1 << int(rng.integers(0, 8))
            out.append(bytes(s))
        elif kind == 2:
            out.append(bytes(s[: int(rng.integers(0, len(s)))]))
        elif kind == 3:  # header fields: version, flags, dims (the CRC then fails, or passes with a forged one)
            j = int(rng.integers(0, 4))
            s[j] = (s[j] + int(rng.integers(1, 256))) % 256  # another value than it had
            out.append(bytes(s))
        else:  # well-formed containers of what this model does not read: sizes, segments, backends, dims
            shape = [(int(rng.integers(1, 4)), int(rng.integers(1, 4))), (65535, 65535), (4, 4, 4)][i % 3]
            segments = [bytes(s[8:])] * int(rng.integers(1, 3))
            out.append(pack(shape, segments, ["compressai", "constriction"][int(rng.integers(0, 2))]))
    return out


@pytest.mark.slow  # ~15 s on 2 loaded cores
def test_a_thousand_fuzzed_streams_get_a_4xx_and_the_server_still_answers(url, device, streams):
    start = time.perf_counter()
    bodies = fuzzed(streams, 1000)
    responses = asyncio.run(post_all(url, bodies, device.fingerprint, concurrency=16))
    codes = [r.status_code for r in responses]
    assert all(400 <= c < 500 for c in codes), sorted(set(codes))
    assert all(r.json()["error"] and "\n" not in r.json()["error"] for r in responses)
    good = post(url, streams[3], device.fingerprint)
    assert good.status_code == 200 and good.json()["predictions"] == post(url, streams[3], device.fingerprint).json()[
        "predictions"]
    assert time.perf_counter() - start < 60


def test_a_body_over_the_limit_is_413_by_header_and_by_streamed_bytes(tiny_server, device, streams):
    with serving(tiny_server, max_body_bytes=1000) as url:
        assert post(url, bytes(1001), device.fingerprint).status_code == 413

        def chunks():  # no Content-Length: the server counts what arrives
            for _ in range(10):
                yield bytes(200)

        response = httpx.post(f"{url}/v1/infer", content=chunks(), headers=headers(device.fingerprint),
                              timeout=TIMEOUT)
        assert response.status_code == 413 and "limit of 1000" in response.json()["error"]
        assert post(url, streams[0], device.fingerprint).status_code == 200


def test_the_token_guards_every_route_but_health(tiny_server, device, streams):
    with serving(tiny_server, token="s3cret") as url:
        assert httpx.get(f"{url}/v1/health").status_code == 200
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert post(url, streams[0], device.fingerprint).status_code == 401
        wrong = post(url, streams[0], device.fingerprint, Authorization="Bearer nope")
        assert wrong.status_code == 403 and wrong.json() == {"error": "wrong token"}
        right = post(url, streams[0], device.fingerprint, Authorization="Bearer s3cret")
        assert right.status_code == 200
        assert httpx.get(f"{url}/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_another_models_fingerprint_is_409_and_none_is_400(url, streams):
    response = post(url, streams[0], "0" * 64)
    assert response.status_code == 409 and "another model" in response.json()["error"]
    missing = httpx.post(f"{url}/v1/infer", content=streams[0], timeout=TIMEOUT)
    assert missing.status_code == 400 and FINGERPRINT_HEADER in missing.json()["error"]


class SlowModel:
    """A model whose batches take ``seconds``: a test hook for a full queue and timeouts."""

    fingerprint = "f" * 64

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def check(self, payload: bytes, max_bytes: int) -> None:
        pass

    def answer(self, payloads: list[bytes]) -> BatchAnswer:
        time.sleep(self.seconds)
        return BatchAnswer([{"echo": {"bytes": len(p)}} for p in payloads], 0.0, self.seconds, [len(payloads)] * len(
            payloads))

    def describe(self) -> dict:
        return {"fingerprint": self.fingerprint, "tasks": []}


def test_a_full_queue_is_503_with_retry_after():
    model = SlowModel(0.5)
    with serving(model, max_batch=1, max_delay_ms=0, queue_size=1) as url:
        responses = asyncio.run(post_all(url, [b"x"] * 6, model.fingerprint, concurrency=6))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(503) >= 3 and set(codes) <= {200, 503}, codes
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1" and "queue is full" in busy.json()["error"]


def test_an_answer_later_than_the_timeout_is_504():
    model = SlowModel(1.0)
    with serving(model, timeout_s=0.2) as url:
        response = post(url, b"x", model.fingerprint)
        assert response.status_code == 504 and "0.2 s" in response.json()["error"]


def raw_request(port: int, fingerprint: str, length: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"POST /v1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n{FINGERPRINT_HEADER}: {fingerprint}\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode())
    return sock


def test_a_client_that_leaves_mid_upload_or_trickles_does_not_break_the_server(tiny_server, device, streams):
    with serving(tiny_server, timeout_s=0.5) as url:
        port = int(url.rpartition(":")[2])
        for _ in range(5):  # leaves mid-upload
            sock = raw_request(port, device.fingerprint, 1000)
            sock.sendall(bytes(10))
            sock.close()
        slow = raw_request(port, device.fingerprint, 1000)  # trickles: a byte per 0.2 s, past the 0.5 s timeout
        started = time.perf_counter()
        reply = b""
        with contextlib.suppress(OSError):
            for _ in range(20):
                slow.sendall(b"\0")
                slow.settimeout(0.2)
                with contextlib.suppress(TimeoutError):
                    reply += slow.recv(4096)
                if reply:
                    break
        slow.close()
        assert reply.startswith(b"HTTP/1.1 408") and time.perf_counter() - started < 4
        assert post(url, streams[0], device.fingerprint).status_code == 200


# ---------------------------------------------------------------- starting


def test_a_bundle_needs_its_run_and_must_be_of_it(tiny_export, tmp_path):
    run, bundle = tiny_export
    with pytest.raises(SplitbenchError, match="pass --run"):
        load_model(bundle)
    with pytest.raises(SplitbenchError, match="goes with a bundle"):
        load_model(run, run)
    model, manifest = load_model(bundle, run)
    assert manifest["fingerprint"] == model.fingerprint
    with serving(model, manifest) as url:
        assert httpx.get(f"{url}/v1/model").json()["manifest"]["run"] == manifest["run"]


def test_serving_beyond_loopback_needs_a_token():
    app = create_app(SlowModel(0), ServeSettings())
    with pytest.raises(SplitbenchError, match="without a token"):
        uvicorn_config(app, ServeSettings(host="0.0.0.0"))
    assert uvicorn_config(app, ServeSettings(host="0.0.0.0", token="t")).host == "0.0.0.0"  # not started
    assert torch.get_num_threads() == 1
