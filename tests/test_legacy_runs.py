"""Runs saved before the trunk + heads redesign (commit cdba5be) still load, and predict and code exactly as
they did then. The fixture (``fixtures/legacy_runs.tar.gz``, written by ``fixtures/make_legacy_runs.py`` with
that commit's code) holds one run of each saved layout: a classifier, a bottleneck classifier, a detector,
a segmentation student and a multi-task head, each with the predictions and coded strings of a fixed input."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from splitbench.compression.bitstream import unpack
from splitbench.pipelines import LearnedPipeline
from splitbench.runs import load_run

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_runs.tar.gz"
BACKBONE = "timm:test_efficientnet"
RUNS = [f"classifier-{BACKBONE}", f"entropic_student-fp-{BACKBONE}-beta0.1", f"classifier-{BACKBONE}-detection",
        f"entropic_student-fp-{BACKBONE}-segmentation-beta0.1", f"multitask_head-fp-{BACKBONE}-detection-beta0.1"]


@pytest.fixture(scope="module")
def legacy_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("legacy")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(out, filter="data")
    return out


def inputs(expected: dict[str, torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    images = [expected[f"input.{i}"] for i in range(sum(k.startswith("input.") for k in expected))]
    return torch.stack(images) if all(im.shape == images[0].shape for im in images) else images


@pytest.mark.parametrize("name", RUNS, ids=[n.split("-", 1)[0] + n.rsplit(BACKBONE, 1)[1] for n in RUNS])
def test_a_run_saved_before_the_redesign_predicts_and_codes_as_it_did(legacy_out, name):
    _, network = load_run(legacy_out, name, torch.device("cpu"))
    expected = load_file(str(legacy_out / name / "expected.safetensors"))
    x = inputs(expected)
    with torch.no_grad():
        if "segments.0.0" in expected:  # a bottleneck: the same strings, then the same predictions from them
            pipeline = LearnedPipeline(network)
            payloads = pipeline.mobile(x)
            for i, payload in enumerate(payloads):
                got = unpack(payload).segments
                assert [bytes(expected[f"segments.{i}.{k}"].tolist()) for k in range(len(got))] == list(got)
            predictions = pipeline.server(payloads)
        else:
            predictions = network.predict(x)
    if "logits" in expected:
        assert torch.allclose(predictions, expected["logits"], atol=1e-5)
        return
    for i, prediction in enumerate(predictions):
        if isinstance(prediction, dict):  # detections
            assert torch.equal(prediction["labels"], expected[f"prediction.{i}.labels"])
            assert torch.allclose(prediction["boxes"], expected[f"prediction.{i}.boxes"], atol=1e-4)
            assert torch.allclose(prediction["scores"], expected[f"prediction.{i}.scores"], atol=1e-5)
        else:  # a label map
            assert torch.equal(prediction, expected[f"prediction.{i}"])
