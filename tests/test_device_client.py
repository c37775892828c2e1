"""The device client and its link model: the emulator's delays (computed, and once on the wall clock), the record
against ``splitbench evaluate``, retries across a server restart, and the command line."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import torch

from splitbench.cli import main
from splitbench.experiment import validate
from splitbench.pipelines import LearnedPipeline
from splitbench.runs import Run
from splitbench.runtime.app import ServeSettings, create_app
from splitbench.runtime.client import ClientOptions, DeviceClient, profile, run_device
from splitbench.runtime.dataset_inputs import dataset_samples
from splitbench.runtime.device import Device
from splitbench.runtime.inputs import folder_samples
from splitbench.runtime.link import PACKET_BYTES, Link, Losses, RateDirection, TraceDirection, predict_ms
from splitbench.runtime.serve import ThreadedServer, free_port

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the link model


def test_100_kb_at_8_mbit_s_takes_100_ms_on_the_models_clock():
    link = Link.build(uplink_mbps=8)
    first = link.uplink.schedule(100_000, now=5.0)
    assert first.delay_s == pytest.approx(0.100, rel=0.10) and first.serialization_s == pytest.approx(0.1)
    second = link.uplink.schedule(100_000, now=5.05)  # behind the first on the same link
    assert second.queue_s == pytest.approx(0.05) and second.done_s == pytest.approx(5.2)
    assert predict_ms(100_000, 8, rtt_ms=40) == pytest.approx(120)
    assert Link.build().downlink.schedule(10**6, 1.0).delay_s == 0  # no rate given: no delay


def test_the_emulator_really_waits_about_that_long():
    client = DeviceClient.__new__(DeviceClient)  # only its clock and sleep
    client._start = time.perf_counter()
    transfer = Link.build(uplink_mbps=8).uplink.schedule(100_000, client._now())
    started = time.perf_counter()
    asyncio.run(client._sleep_until(transfer.done_s))
    assert 0.09 <= time.perf_counter() - started < 0.5  # loose: a shared machine may oversleep


def test_each_lost_packet_costs_an_rtt_and_its_resend():
    direction = RateDirection(8e6, rtt_s=0.04, losses=Losses(0.3, seed=1))
    transfer = direction.schedule(15 * PACKET_BYTES, 0.0)
    resend = PACKET_BYTES * 8 / 8e6
    assert transfer.lost_packets > 0
    assert transfer.retransmission_s == pytest.approx(transfer.lost_packets * (0.04 + resend))
    assert transfer.delay_s == pytest.approx(15 * resend + transfer.retransmission_s + 0.02)
    again = RateDirection(8e6, rtt_s=0.04, losses=Losses(0.3, seed=1)).schedule(15 * PACKET_BYTES, 0.0)
    assert again == transfer  # seeded


def test_a_mahimahi_trace_delivers_one_packet_per_line_and_loops(tmp_path):
    trace = tmp_path / "link.trace"
    trace.write_text("\n".join(["1", "1", "3", "4"]) + "\n")  # 4 packets per 4 ms
    link = Link.build(trace=trace, rtt_ms=10)
    up = link.uplink
    assert up.schedule(2 * PACKET_BYTES, 0.0).done_s == pytest.approx(0.001 + 0.005)  # both at 1 ms, + RTT/2
    assert up.schedule(3 * PACKET_BYTES, 0.0).done_s == pytest.approx(0.005 + 0.005)  # 3 ms, 4 ms, then 5 ms
    assert up.schedule(100, 0.0201).done_s == pytest.approx(0.021 + 0.005)  # the loop: 20 ms + 1 ms
    assert isinstance(up, TraceDirection) and link.describe()["uplink"]["trace_period_ms"] == 4
    (tmp_path / "bad.trace").write_text("5\n3\n")
    with pytest.raises(Exception, match="non-decreasing"):
        Link.build(trace=tmp_path / "bad.trace")


# ---------------------------------------------------------------- device → HTTP → server


@pytest.fixture(scope="module")
def served(tiny_server):
    settings = ServeSettings(port=free_port(), max_batch=8, max_delay_ms=10)
    with ThreadedServer(create_app(tiny_server, settings), settings) as url:
        yield url


def test_accuracy_and_bytes_over_http_equal_splitbench_evaluate(tiny_export, tiny_server, served, tmp_path):
    run_dir, bundle = tiny_export
    config = tiny_server.config
    samples = dataset_samples("shapes", config.eval.split, config.data.val_samples, config.data.image_size,
                              config.data.seed)
    record = run_device(Device(bundle), samples, ClientOptions(served, concurrency=4), Link.build(50, 50, 2))
    assert record["num_images"] == record["answered"] == len(samples) == 40 and record["failed"] == 0
    assert [e["index"] for e in record["images"]] == list(range(40))

    evaluated = Run(validate(config.model_dump(mode="json")), run_dir.parent).evaluate(
        progress=False, results=tmp_path / "results.jsonl")[0]
    assert record["accuracy"]["top1"] == pytest.approx(evaluated["metrics"]["top1"])
    assert record["accuracy"]["top5"] == pytest.approx(evaluated["metrics"]["top5"])
    images = torch.stack([torch.from_numpy(s.image) for s in samples])
    pipeline = tiny_server.pipeline  # what evaluate runs, image by image
    expected = pipeline.server(pipeline.mobile(images)).argmax(1).tolist()
    assert [e["predictions"]["classification"]["classes"][0] for e in record["images"]] == expected
    # Bytes: exactly the torch pipeline's with the device's coder; evaluate's (CompressAI) differ by its flush only.
    constriction = LearnedPipeline(pipeline.network, backend="constriction").mobile(images)
    payload = [e["bytes"]["payload"] for e in record["images"]]
    assert payload == [len(s) for s in constriction]
    assert abs(np.mean(payload) - evaluated["data_size"]["bytes_mean"]) <= 8
    latency = record["latency_ms"]
    assert latency["uplink"]["p50"] > 0 and latency["total"]["p99"] >= latency["total"]["p50"]
    parts = sum(latency[s]["mean"] for s in latency if s != "total")
    assert parts == pytest.approx(latency["total"]["mean"], rel=1e-6)
    assert all(e["bytes"]["wire"] > e["bytes"]["payload"] + 100 for e in record["images"])  # HTTP counted apart
    assert profile(record)["sizes"]["32x32"]["images"] == 40


def test_folder_images_are_read_without_torch_and_labelled_by_folder(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((8, 10, 3), 60 * label, np.uint8)).save(tmp_path / name / "a.png")
    samples = folder_samples(tmp_path)
    assert [(s.label, s.name, s.image.shape) for s in samples] == [(0, "cat/a.png", (3, 8, 10)),
                                                                   (1, "dog/a.png", (3, 8, 10))]
    assert samples[1].image.max() == pytest.approx(60 / 255)


@pytest.mark.slow
def test_a_server_restart_mid_run_costs_one_retry_and_every_image_counts_once(tiny_server, tiny_export):
    settings = ServeSettings(port=free_port(), max_batch=4, max_delay_ms=2)
    server = ThreadedServer(create_app(tiny_server, settings), settings)
    server.start()
    samples = dataset_samples("shapes", "val", 40, 32)
    result: dict = {}
    link = Link.build(uplink_mbps=2, rtt_ms=20)  # ~25 ms per request: the run lasts about a second
    client = threading.Thread(target=lambda: result.update(record=run_device(
        Device(tiny_export[1]), samples, ClientOptions(server.url, concurrency=2, retry_wait_s=1.0), link)))
    client.start()
    time.sleep(0.4)
    server.stop(force=True)  # as if killed: open connections are dropped
    time.sleep(0.2)
    restarted = ThreadedServer(create_app(tiny_server, settings), settings)
    restarted.start()
    try:
        client.join(timeout=60)
    finally:
        restarted.stop()
    record = result["record"]
    assert record["num_images"] == record["answered"] == 40 and record["failed"] == 0
    assert sorted(e["index"] for e in record["images"]) == list(range(40))
    retried = [e for e in record["images"] if e["attempts"] == 2]
    assert retried and record["retried"] == len(retried)
    assert len({e["request_id"] for e in record["images"]}) == 40  # a retry kept its request's id


def test_cli_device_writes_a_record_and_an_unreachable_server_is_one_line(tiny_export, served, tmp_path, capsys):
    _, bundle = tiny_export
    out, prof = tmp_path / "record.json", tmp_path / "profile.json"
    assert main(["--no-progress", "device", str(bundle), "--server", served, "--num-samples", "6", "--concurrency",
                 "2", "--uplink-mbps", "5", "--downlink-mbps", "5", "--rtt-ms", "40", "--out", str(out),
                 "--profile", str(prof)]) == 0
    record = json.loads(out.read_text())
    assert record["answered"] == 6 and record["link"]["uplink"] == {"mbps": 5.0, "rtt_ms": 40.0, "loss": 0.0}
    assert record["latency_ms"]["uplink"]["p50"] > 20  # RTT/2 + serialisation of ~0.6 kB at 5 Mbit/s
    assert "32x32" in json.loads(prof.read_text())["sizes"]
    capsys.readouterr()
    assert main(["device", str(bundle), "--server", f"http://127.0.0.1:{free_port()}", "--num-samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the server") and err.count("\n") == 1
