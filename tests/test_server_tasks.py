"""Tasks other than classification over HTTP: a detection (and a segmentation) student, exported, coded by the
torch-free device, served and answered over HTTP, gives the in-process ``LearnedPipeline``'s predictions, as the
heads' JSON answers."""

from __future__ import annotations

import json

import pytest
import torch

from splitbench.runtime.app import ServeSettings, create_app
from splitbench.runtime.client import ClientOptions, run_device
from splitbench.runtime.dataset_inputs import dataset_samples
from splitbench.runtime.device import Device
from splitbench.runtime.export import export_run
from splitbench.runtime.serve import ThreadedServer, free_port
from splitbench.runtime.server import Server
from tests.conftest import save_run
from tests.test_tasks import HEADS

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
NUM_IMAGES = 6


def close(served: object, expected: object) -> bool:
    """Equal JSON answers, floats (boxes, scores) to 1e-4: a batch of other images may round them otherwise."""
    if isinstance(expected, dict):
        return isinstance(served, dict) and served.keys() == expected.keys() and all(
            close(served[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return isinstance(served, list) and len(served) == len(expected) and all(
            close(s, e) for s, e in zip(served, expected, strict=True))
    return served == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_a_task_students_answers_over_http_equal_the_in_process_pipeline(task, tmp_path):
    run_dir = save_run(tmp_path / "runs", sections={"task": task, "head": HEADS[task]})
    bundle = export_run(run_dir, tmp_path / "bundle")
    server = Server(run_dir)
    samples = dataset_samples("shapes", "val", NUM_IMAGES, server.config.data.image_size)
    settings = ServeSettings(port=free_port(), max_batch=4, max_delay_ms=10)
    with ThreadedServer(create_app(server, settings), settings) as url:
        record = run_device(Device(bundle), samples, ClientOptions(url, concurrency=2))
    assert record["answered"] == NUM_IMAGES and record["accuracy"] is None
    pipeline = server.pipeline
    images = torch.stack([torch.from_numpy(s.image) for s in samples])
    expected = pipeline.network.answers(pipeline.server(pipeline.mobile(images)), server.top_k)
    served = [e["predictions"] for e in record["images"]]
    assert json.loads(json.dumps(expected)) == expected  # plain JSON types
    assert all(close(s, e) for s, e in zip(served, expected, strict=True))
    assert all(task in s for s in served)
    if task == "detection":
        assert any(s["detection"]["boxes"] for s in served)  # something to compare
