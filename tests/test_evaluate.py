"""The evaluator: micro-batches chosen by measuring change neither predictions nor bytes, the rate estimate tracks
the real bytes, the record says how the networks ran, and eval.backend picks the entropy coder."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from splitbench.compression.bitstream import BACKENDS, header_size, unpack
from splitbench.config import EvalConfig
from splitbench.errors import ConfigError, SplitbenchError
from splitbench.evaluation import evaluate, evaluate_classification
from splitbench.evaluation.micro_batch import MicroBatchTuner, candidates
from splitbench.experiment import load_configs
from splitbench.pipelines import LearnedPipeline
from splitbench.pipelines.networks import MOBILE_NETWORK, SERVER_NETWORK, Networks, micro_batched, to_float

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGES = 40


def student(config: str = "shapes/entropic_student.yaml", **eval_settings) -> LearnedPipeline:
    """A shipped shapes student with random weights, its latent widened to span many symbols, its tables built."""
    from splitbench.methods.base import BuildContext
    from splitbench.runs import Run

    overrides = ["method_args.beta=0.02"] + [f"eval.{k}={v}" for k, v in eval_settings.items()]
    experiment = load_configs(config, overrides)[0]
    torch.manual_seed(0)
    model = Run(experiment, Path("unused")).structure(torch.device("cpu")).eval()
    bottleneck = model.trunk.bottleneck
    with torch.no_grad():
        bottleneck.encoder[-1].weight.mul_(40)
        for p in bottleneck.coder.entropy_bottleneck.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bottleneck.coder.update()
    return BuildContext(experiment, 10, torch.device("cpu")).learned_pipeline(model)


@pytest.fixture(scope="module")
def pipeline() -> LearnedPipeline:
    return student()


@pytest.fixture(scope="module")
def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    from splitbench.data import get_dataset

    dataset = get_dataset("shapes", "val", image_size=64, num_samples=IMAGES, seed=0, train_transforms=False)
    return [(x, torch.tensor(y)) for x, y in dataset]


class Top1:
    """A metric that keeps each image's top-1 class."""

    def __init__(self) -> None:
        self.classes: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.classes.append(logits.argmax(1))

    def compute(self) -> dict[str, float]:
        return {}


def test_predictions_and_bytes_do_not_depend_on_the_batch_or_micro_batch(pipeline, data):
    """Evaluated at batch 1, 7 and 32 (the micro-batches tuned on the first batches differ with it): the same
    per-sample sizes and the same top-1 for every image, and each record says how its networks ran."""
    sizes, runtimes, classes = {}, {}, {}
    for batch in (1, 7, 32):
        metric = Top1()
        result = evaluate(pipeline, DataLoader(data, batch_size=batch), metric, progress=False)
        sizes[batch], runtimes[batch], classes[batch] = result.sizes, result.runtime, torch.cat(metric.classes)
    assert torch.equal(classes[1], classes[7]) and torch.equal(classes[1], classes[32])
    assert sizes[1] == sizes[7] == sizes[32]
    assert len(set(sizes[1])) > 1  # the samples really differ
    for batch, runtime in runtimes.items():
        assert runtime["micro_batch"][MOBILE_NETWORK] == 1  # the device network runs per image on a CPU
        assert runtime["micro_batch"][SERVER_NETWORK] in candidates(batch)
        tried = candidates(batch)[: -(-IMAGES // batch) - 1]  # one batch each, after the warm-up batch
        assert set(runtime["micro_batch_ms"][SERVER_NETWORK]) == {str(s) for s in tried}
        assert runtime["backend"] == "compressai" and runtime["server_layout"] == "channels_last"
    assert pipeline.networks.micro_batch == {MOBILE_NETWORK: 1}  # whole batches again after an evaluation
    # ... and the server's logits in any micro-batch are the whole batch's up to float rounding (a convolution or
    # a matmul of another batch size may sum in another order)
    decoded = pipeline.decode(pipeline.mobile(torch.stack([x for x, _ in data])))
    whole = pipeline.server_forward(decoded)
    for size in (1, 3, 16):
        pipeline.networks.micro_batch[SERVER_NETWORK] = size
        logits = pipeline.server_forward(decoded)
        assert torch.allclose(logits, whole, rtol=1e-4, atol=1e-4) and torch.equal(logits.argmax(1), whole.argmax(1))
    pipeline.networks.micro_batch.pop(SERVER_NETWORK)


def test_the_estimate_tracks_the_real_bytes(pipeline, data):
    """The record's estimate is the coder's table model: the payloads are it plus rANS's flush (4 to 8 bytes)
    and the container's header; and it stays close to the entropy model's continuous likelihoods."""
    from splitbench.compression.latent_coders import bits_per_sample

    images = torch.stack([x for x, _ in data])
    payloads = pipeline.mobile(images)
    estimate = pipeline.estimate_bits(images) / 8
    strings = torch.tensor([len(p) - header_size(p) for p in payloads], dtype=torch.float64)
    assert ((strings - estimate > 4 - 1e-6) & (strings - estimate <= 8)).all()
    result = evaluate_classification(pipeline, DataLoader(data, batch_size=16), progress=False)
    assert result.data_size["estimate_bytes_mean"] == pytest.approx(float(estimate.mean()), rel=1e-12)
    with torch.no_grad():
        y = torch.cat([pipeline.trunk.encode(pipeline.network.prepare(x[None])[0]) for x in images])
        _, likelihoods = pipeline.coder(y)
    assert torch.allclose(estimate, bits_per_sample(likelihoods).double() / 8, rtol=0.03)


def test_candidates_and_the_tuner_keep_the_fastest_per_step():
    assert candidates(100) == [100, 25, 6] and candidates(32) == [32, 8, 2] and candidates(7) == [7, 1]
    assert candidates(1) == [1]
    networks = Networks(torch.device("cpu"), (MOBILE_NETWORK, SERVER_NETWORK))
    tuner = MicroBatchTuner(networks)
    # per-sample seconds each step would take at each size (what the evaluator measures)
    cost = {MOBILE_NETWORK: {32: 3.0, 8: 1.0, 2: 2.0}, SERVER_NETWORK: {32: 1.0, 8: 2.0, 2: 3.0}}
    seen = []
    for _ in range(6):
        tuner.before(32)
        seen.append(dict(networks.micro_batch))
        tuner.after(32, {step: 32 * cost[step][networks.micro_batch[step]] for step in cost})
    assert [s[SERVER_NETWORK] for s in seen] == [32, 32, 8, 2, 32, 32]  # warm-up, the candidates, the choice
    assert [s[MOBILE_NETWORK] for s in seen[4:]] == [8, 8]
    assert tuner.describe(32)["micro_batch"] == {MOBILE_NETWORK: 8, SERVER_NETWORK: 32}
    tuner.finish()
    assert networks.micro_batch == {}


def test_micro_batches_slice_every_argument_and_join_tensors_and_lists_in_order():
    x = torch.arange(10.0)[:, None]
    calls = []
    assert torch.equal(micro_batched(lambda t: calls.append(len(t)) or t * 2, 3, x), x * 2)
    assert calls == [3, 3, 3, 1]
    assert micro_batched(lambda t, names: [(n, float(v)) for n, v in zip(names, t, strict=True)], 4, x,
                         list("abcdefghij")) == [(n, float(i)) for i, n in enumerate("abcdefghij")]
    assert micro_batched(lambda t: calls.append(len(t)) or t, None, x) is x and calls[-1] == 10


def test_eval_backend_writes_constriction_streams_and_names_a_typo(data):
    constriction = student(backend="constriction")
    images = torch.stack([x for x, _ in data[:8]])
    payloads = constriction.mobile(images)
    assert {unpack(p, backends=None).backend for p in payloads} == {"constriction"}
    assert torch.equal(constriction.server(payloads), constriction.server(student().mobile(images)))
    result = evaluate_classification(constriction, DataLoader(data[:8], batch_size=4), progress=False)
    assert result.runtime["backend"] == "constriction"
    assert typing.get_args(EvalConfig.model_fields["backend"].annotation) == BACKENDS  # the schema knows them all
    with pytest.raises(ConfigError, match=r"eval.backend.*'compressai' or 'constriction'.*'constriktion'"):
        load_configs("shapes/entropic_student.yaml", ["eval.backend=constriktion"])
    with pytest.raises(SplitbenchError, match="ScaleHyperprior writes compressai streams, not constriction"):
        student("shapes/entropic_student_shp.yaml", backend="constriction")


def test_a_default_eval_setting_keeps_the_config_hash():
    (default,) = load_configs("shapes/teacher.yaml")
    (explicit,) = load_configs("shapes/teacher.yaml", ["eval.backend=compressai", "eval.amp=false"])
    (other,) = load_configs("shapes/teacher.yaml", ["eval.backend=constriction"])
    assert default.hash() == explicit.hash() != other.hash()


def test_amp_is_for_cuda_only_and_outputs_come_back_in_float32():
    assert not Networks(torch.device("cpu"), (SERVER_NETWORK,), amp=True).amp  # eval.amp is a CUDA setting
    assert Networks(torch.device("cuda"), (SERVER_NETWORK,), amp=True).amp
    half = torch.ones(2, dtype=torch.bfloat16)
    out = to_float([{"boxes": half, "labels": torch.ones(2, dtype=torch.int64)}, (half,)])
    assert out[0]["boxes"].dtype == torch.float32 and out[0]["labels"].dtype == torch.int64
    assert out[1][0].dtype == torch.float32
