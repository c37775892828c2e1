"""``splitbench device BUNDLE --server URL`` (or ``--codec jpeg --quality Q``): the torch-free device encodes each
image, sends it over an emulated link to the edge server, and records accuracy, bytes and where each request's
time went. The encoder is a bundle's :class:`~splitbench.runtime.device.Device` or, for the full-offloading
reference, a :class:`~splitbench.runtime.codec_device.CodecDevice` (its "entropy encode" is the codec's encode).

Each image is its own request (``POST /v1/infer``), over ``concurrency`` keep-alive connections (httpx). Encoding
runs in one worker thread (the device has one encoder), so requests overlap their link and server time, not
their encoding. The link (:mod:`~splitbench.runtime.link`) delays each request by what the emulated uplink
takes for its bytes (request line, headers, body) before it is sent, and each answer by what the downlink takes
for the response after it arrives, so the measured latency includes the link. A request that fails (no
connection, a dropped connection, a timeout, a 5xx) is retried once, after ``retry_wait_s``, with the same
``X-Request-Id``; a 4xx is final. Every image appears in the record exactly once.

Per request the record splits the latency into: device queue (waiting for the encoder behind other images),
device network, entropy encode, uplink, server queue, server decode, server network, downlink, and ``other``
(measured but not attributed: loopback transport, HTTP and JSON, the server reading the body; a retry's wait).
Torch-free.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import numpy as np

from splitbench.errors import SplitbenchError
from splitbench.runtime.inputs import Sample
from splitbench.runtime.link import Link
from splitbench.runtime.protocol import FINGERPRINT_HEADER, INFER, MODEL, REQUEST_ID_HEADER

STAGES = ("device_queue", "device_network", "entropy_encode", "uplink", "server_queue", "server_decode",
          "server_network", "downlink", "other", "total")


@dataclass(frozen=True)
class ClientOptions:
    server: str
    token: str | None = None
    concurrency: int = 1
    timeout_s: float = 30.0
    retry_wait_s: float = 1.0


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """mean, p50, p90, p99 (empty: {})."""
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), **{f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)}}


def request_bytes(request: httpx.Request) -> int:
    """Bytes of an HTTP/1.1 request's line and headers (without the body), as they go on the wire."""
    line = len(request.method) + len(request.url.raw_path) + len(" HTTP/1.1\r\n") + 1
    return line + sum(len(k) + len(v) + 4 for k, v in request.headers.raw) + 2


def response_header_bytes(response: httpx.Response) -> int:
    line = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    return line + sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 2


def infer_headers(fingerprint: str, rid: str, token: str | None = None) -> dict[str, str]:
    """The headers of one ``POST /v1/infer`` (besides httpx's own)."""
    headers = {FINGERPRINT_HEADER: fingerprint, REQUEST_ID_HEADER: rid, "Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def infer_request_bytes(payload_bytes: int, server: str = "http://127.0.0.1:8000", token: str | None = None) -> int:
    """Bytes of the request line and headers of one request of ``payload_bytes`` as this client sends it (a
    64-hex fingerprint, a 12-hex run id and an image index of 4 digits): what a prediction adds to the payload."""
    with httpx.Client(base_url=server) as client:
        request = client.build_request("POST", INFER, content=b"\0" * payload_bytes,
                                       headers=infer_headers("0" * 64, "0" * 12 + "-1234", token))
    return request_bytes(request)


class Encoder(Protocol):
    """What the client needs of a device: the fingerprint it sends, a check of the server's model, one image's
    stream with its network and entropy-coding seconds, and what to call it in the record."""

    fingerprint: str

    def check_server(self, model: dict[str, Any], url: str) -> None: ...

    def encode_timed(self, image: np.ndarray) -> tuple[bytes, float, float]: ...

    def describe(self) -> dict[str, Any]: ...


class Retryable(Exception):
    """An attempt that may succeed if repeated (transport failure, timeout, 5xx)."""


class DeviceClient:
    """Sends samples from a device (an :class:`Encoder`) to a server over a :class:`Link`."""

    def __init__(self, device: Encoder, options: ClientOptions, link: Link | None = None) -> None:
        self.device = device
        self.options = options
        self.link = link or Link.build()
        self.run_id = uuid.uuid4().hex[:12]
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="splitbench-device")
        self._start = 0.0

    def _now(self) -> float:
        return time.perf_counter() - self._start

    async def _sleep_until(self, t: float) -> None:
        left = t - self._now()
        if left > 0:
            await asyncio.sleep(left)

    async def _attempt(self, client: httpx.AsyncClient, stream: bytes, rid: str) -> dict[str, Any]:
        request = client.build_request("POST", INFER, content=stream,
                                       headers=infer_headers(self.device.fingerprint, rid, self.options.token))
        head = request_bytes(request)
        up = self.link.uplink.schedule(head + len(stream), self._now())
        await self._sleep_until(up.done_s)
        sent = self._now()
        try:
            response = await client.send(request)
        except httpx.HTTPError as error:
            raise Retryable(f"{type(error).__name__}: {error}") from None
        received = self._now()
        response_bytes = response_header_bytes(response) + len(response.content)
        down = self.link.downlink.schedule(response_bytes, received)
        await self._sleep_until(down.done_s)
        if response.status_code >= 500:
            raise Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code != 200:
            return {"status": "refused", "http_status": response.status_code, "error": body.get("error")}
        server = body["timing_ms"]
        ms = {"uplink": up.delay_s * 1000, "downlink": down.delay_s * 1000, "server_queue": server["queue"],
              "server_decode": server["decode"], "server_network": server["network"],
              "exchange": (received - sent) * 1000}
        return {"status": "ok", "predictions": body["predictions"], "batch_size": body["batch_size"], "ms": ms,
                "bytes": {"payload": len(stream), "request_headers": head,
                          "response": response_bytes, "wire": head + len(stream) + response_bytes},
                "lost_packets": up.lost_packets + down.lost_packets}

    async def _one(self, client: httpx.AsyncClient, sample: Sample) -> dict[str, Any]:
        started = self._now()
        loop = asyncio.get_running_loop()
        stream, network_s, encode_s = await loop.run_in_executor(self._encoder, self.device.encode_timed,
                                                                 sample.image)
        queue_s = self._now() - started - network_s - encode_s  # waiting for the device's one encoder
        rid = f"{self.run_id}-{sample.index}"
        entry: dict[str, Any] = {"index": sample.index, "name": sample.name, "request_id": rid, "label": sample.label,
                                 "size": list(sample.image.shape[-2:]), "attempts": 0}
        errors = []
        for attempt in range(2):
            entry["attempts"] = attempt + 1
            try:
                out = await self._attempt(client, stream, rid)
                break
            except Retryable as error:
                errors.append(str(error))
                if attempt == 0:
                    await asyncio.sleep(self.options.retry_wait_s)
        else:
            out = {"status": "failed", "error": errors[-1]}
        entry.update(out)
        if errors:
            entry["errors"] = errors
        if out["status"] == "ok":
            ms = out["ms"]
            ms.update(device_queue=queue_s * 1000, device_network=network_s * 1000, entropy_encode=encode_s * 1000,
                      total=(self._now() - started) * 1000)
            attributed = sum(ms[k] for k in STAGES if k not in ("other", "total"))
            ms["other"] = ms["total"] - attributed
            ms.pop("exchange")
        return entry

    async def run(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Send every sample (``concurrency`` at a time); the record, with one entry per sample."""
        self._start = time.perf_counter()
        limits = httpx.Limits(max_connections=self.options.concurrency,
                              max_keepalive_connections=self.options.concurrency)
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else {}
        todo: asyncio.Queue[Sample] = asyncio.Queue()
        for sample in samples:
            todo.put_nowait(sample)
        entries: dict[int, dict[str, Any]] = {}
        async with httpx.AsyncClient(base_url=self.options.server, timeout=self.options.timeout_s,
                                     limits=limits) as client:
            model = await self._model(client, headers)

            async def worker() -> None:
                while not todo.empty():
                    sample = todo.get_nowait()
                    entries[sample.index] = await self._one(client, sample)

            await asyncio.gather(*(worker() for _ in range(self.options.concurrency)))
        wall = self._now()
        self._encoder.shutdown(wait=False)
        return summarize([entries[s.index] for s in samples], wall, model, self)

    async def _model(self, client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
        """The server's model, checked by the device before anything is sent."""
        try:
            response = await client.get(MODEL, headers=headers)
        except httpx.HTTPError as error:
            raise SplitbenchError(f"cannot reach the server at {self.options.server}: {error}") from None
        if response.status_code != 200:
            raise SplitbenchError(f"{self.options.server}/v1/model: HTTP {response.status_code} "
                                  f"{response.text[:200]}")
        model = response.json()
        self.device.check_server(model, self.options.server)
        return model


def top_k_correct(entry: dict[str, Any], k: int) -> bool:
    """Whether the label is among the first ``k`` classes of the classification answer."""
    answer = entry.get("predictions", {}).get("classification")
    return answer is not None and entry["label"] in answer["classes"][:k]


def summarize(entries: list[dict[str, Any]], wall_s: float, model: dict[str, Any],
              client: DeviceClient) -> dict[str, Any]:
    """The record: counts, accuracy (failures count as wrong), bytes and latency percentiles, per-image entries."""
    ok = [e for e in entries if e["status"] == "ok"]
    labelled = [e for e in entries if e["label"] is not None]
    accuracy = {f"top{k}": sum(top_k_correct(e, k) for e in labelled) / len(labelled) for k in (1, 5)} \
        if labelled and "classification" in model.get("tasks", []) else None
    bytes_ = {k: percentiles([e["bytes"][k] for e in ok]) for k in ("payload", "request_headers", "response", "wire")}
    latency = {s: percentiles([e["ms"][s] for e in ok]) for s in STAGES}
    sizes = [e["batch_size"] for e in ok]
    return {"server": client.options.server, "device": client.device.describe(), "run": model.get("run"),
            "fingerprint": client.device.fingerprint, "num_images": len(entries), "answered": len(ok),
            "refused": sum(e["status"] == "refused" for e in entries),
            "failed": sum(e["status"] == "failed" for e in entries),
            "retried": sum(e["attempts"] > 1 for e in entries), "accuracy": accuracy, "bytes": bytes_,
            "latency_ms": latency, "server_batch_size": percentiles(sizes), "concurrency": client.options.concurrency,
            "link": client.link.describe(), "wall_s": wall_s, "images_per_s": len(entries) / wall_s,
            "images": entries}


PROFILE_STAGES = ("device_network", "entropy_encode", "server_queue", "server_decode", "server_network", "other")


def profile(record: dict[str, Any]) -> dict[str, Any]:
    """Measured ms per stage (device network, entropy encode, the server's stages and the unattributed rest as
    this client saw them; ``off_link``: each request's total less its link delays) and bytes (payload, HTTP
    request headers, response), per image size, with the run and the device they were measured for: what
    ``splitbench deploy`` reads as a measured profile."""
    by_size: dict[str, list[dict[str, Any]]] = {}
    for e in record["images"]:
        if e["status"] == "ok":
            by_size.setdefault("x".join(map(str, e["size"])), []).append(e)
    return {"run": record["run"], "device": record["device"], "link": record["link"],
            "concurrency": record["concurrency"], "sizes": {
        size: {"images": len(es), **{f"{s}_ms": percentiles([e["ms"][s] for e in es]) for s in PROFILE_STAGES},
               "off_link_ms": percentiles([e["ms"]["total"] - e["ms"]["uplink"] - e["ms"]["downlink"] for e in es]),
               **{f"{b}_bytes": percentiles([e["bytes"][b] for e in es]) for b in ("payload", "request_headers",
                                                                                  "response")}}
        for size, es in sorted(by_size.items())}}


def run_device(device: Encoder, samples: Sequence[Sample], options: ClientOptions,
               link: Link | None = None) -> dict[str, Any]:
    """The client's record for ``samples`` (blocking: runs its own event loop)."""
    if options.concurrency < 1:
        raise SplitbenchError("--concurrency must be at least 1")
    return asyncio.run(DeviceClient(device, options, link).run(samples))
