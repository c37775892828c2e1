"""Multi-task: heads trained on a frozen Entropic Student body, composed, evaluated from one bitstream."""

import json
import shutil

import pytest
import torch
from conftest import tiny_raw
from test_tasks import DETECTION_HEAD, SEGMENTATION_HEAD

from splitbench.bench.report import write_report
from splitbench.errors import CheckpointError, ConfigError
from splitbench.experiment import validate
from splitbench.pipelines import LearnedPipeline
from splitbench.runs import build_pipeline, evaluate_experiment, train_experiment
from splitbench.training.checkpoint import load_weights, save_weights

BODY = {"beta": 0.1}


def head_raw(task: str, **head) -> dict:
    heads = {"detection": DETECTION_HEAD, "segmentation": {**SEGMENTATION_HEAD, "output_stride": 32}}
    return tiny_raw("multitask_head", task=task, method_args=BODY, head={**heads[task], **head})


def multitask_raw() -> dict:
    raw = tiny_raw("multitask", task="multitask", method_args=BODY)
    raw["train"]["stages"] = []
    raw["eval"]["num_samples"] = 12
    return raw


@pytest.fixture(scope="module")
def mt_out(tmp_path_factory, trained_teacher):
    out = tmp_path_factory.mktemp("multitask_out")
    shutil.copytree(trained_teacher, out, dirs_exist_ok=True)
    train_experiment(validate(tiny_raw("entropic_student")), out, progress=False)  # the body, beta 0.1
    for task in ("detection", "segmentation"):
        train_experiment(validate(head_raw(task)), out, progress=False)
    return out


def test_heads_train_on_a_frozen_body(mt_out):
    """Each head run saved the body it trained on: weights and BatchNorm statistics exactly the body run's
    (frozen), while its head moved away from where it started."""
    from splitbench.runs import Run, load_run

    cpu = torch.device("cpu")
    _, body = load_run(mt_out, "entropic_student-fp-resnet10n-beta0.1", cpu)
    for task in ("detection", "segmentation"):
        config, trained = load_run(mt_out, f"multitask_head-fp-resnet10n-{task}-beta0.1", cpu)
        theirs = trained.trunk.state_dict()
        for key, value in body.trunk.state_dict().items():
            assert torch.equal(value, theirs[key]), f"{task}: the body's {key} changed while its head trained"
        torch.manual_seed(config.train.seed)  # as the trainer does before building
        start = Run(config, mt_out).structure(cpu).heads[task].state_dict()
        moved = [k for k, v in trained.heads[task].state_dict().items() if v.is_floating_point()
                 and not torch.equal(v, start[k])]
        assert moved, f"the {task} head did not train"
    pipeline = build_pipeline(validate(multitask_raw()), mt_out, cpu)
    assert pipeline.network.tasks == ["classification", "detection", "segmentation"]


def test_one_bitstream_serves_every_task(mt_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mt_out, out)
    record = evaluate_experiment(validate(multitask_raw()), out, progress=False)
    assert record["task"] == "multitask"
    assert set(record["metrics"]) == {"top1", "top5", "map", "map50", "map75", "miou", "pixel_acc"}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["multitask", "classification", "detection", "segmentation"]
    for r in records[1:]:  # one record per task: the same bytes and the same encoder
        assert r["data_size"] == record["data_size"] and r["encoder"] == record["encoder"]
        assert set(r["metrics"]) < set(record["metrics"]) and r["combined_hash"] == record["config_hash"]
    # the classification answer is exactly the body's own (the Entropic Student) on the same bitstream
    body = evaluate_experiment(validate({**tiny_raw("entropic_student"), "eval": {"num_samples": 12}}), out,
                               progress=False)
    assert body["metrics"]["top1"] == record["metrics"]["top1"]
    # ... from the body's own bitstream: one container carrying the image size, which the heads need (no wrapper)
    assert record["data_size"]["bytes_mean"] == body["data_size"]["bytes_mean"]
    paths = write_report(records + [body], tmp_path / "report")
    table = paths["multitask.md"].read_text()
    assert "multi-task (one bitstream)" in table and "no detection, segmentation record" in table


def test_a_head_trained_on_another_body_is_refused(mt_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mt_out, out)
    run = out / "multitask_head-fp-resnet10n-segmentation-beta0.1" / "model.safetensors"
    from splitbench.runs import load_run

    config, model = load_run(out, run.parent.name, torch.device("cpu"))
    with torch.no_grad():
        model.trunk.bottleneck.encoder[0].weight.add_(1e-3)
    save_weights(model, run, {"method": config.method, "config": config.model_dump(mode="json")})
    load_weights(model, run)  # the file itself is sound
    with pytest.raises(CheckpointError, match="segmentation-beta0.1 was trained on another encoder"):
        build_pipeline(validate(multitask_raw()), out, torch.device("cpu"))


def test_a_segmentation_head_on_a_shared_body_needs_stride_32(mt_out, tmp_path):
    shutil.copytree(mt_out, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "multitask_head-fp-resnet10n-segmentation-beta0.1")
    with pytest.raises(ConfigError, match="set head.output_stride: 32"):
        train_experiment(validate(head_raw("segmentation", output_stride=8)), tmp_path, progress=False)


def test_published_multitask_configs_build():
    """The ImageNet body (5 betas as published) and the COCO/VOC heads validate, and the heads build on a
    ResNet-50 FP-24 body (fresh weights; 224 px to keep it quick: the layers do not depend on the size)."""
    from splitbench.data import num_classes
    from splitbench.experiment import load_configs
    from splitbench.methods import BuildContext
    from splitbench.models.backbones import get_backbone
    from splitbench.models.builders import classifier_network, head_on_trunk
    from splitbench.tasks import get_task

    bodies = load_configs("multitask/imagenet_body.yaml", ["backbone.pretrained=false"])
    assert [c.args().beta for c in bodies] == [0.32, 1.28, 5.12, 10.24, 20.48]
    assert bodies[0].data.image_size == 416
    ctx = BuildContext(bodies[0], 1000, torch.device("cpu"))
    teacher = classifier_network(get_backbone("resnet50", 1000), 224)
    body = bodies[0].method_spec.build(ctx, bodies[0].args(), teacher)
    heads = (("coco_detection_head", "detection", 81), ("coco_segmentation_head", "segmentation", 21),
             ("voc_segmentation_head", "segmentation", 21))
    for name, task, classes in heads:
        configs = load_configs(f"multitask/{name}.yaml")
        assert [c.args().body_run("resnet50") for c in configs] == [b.run_name() for b in bodies]
        assert num_classes(configs[0].data.dataset, task=task) == classes
        model = head_on_trunk(body, task, get_task(task).head, classes, configs[0].head_args(), 224)
        assert model.trunk is body.trunk and model.stride == 32
        levels = ["layer1", "layer2", "layer3", "layer4"] if task == "detection" else ["layer3", "layer4"]
        assert model.heads[task].levels == levels


def test_two_stage_segmentation_head_starts_from_its_pretrain_run(mt_out, tmp_path):
    """The published recipe: a -pretrain run first (COCO's masks; here shapes), then the final head starts
    from its weights; the final run is the one ``multitask`` composes."""
    from splitbench.runs import load_run

    shutil.copytree(mt_out, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "multitask_head-fp-resnet10n-segmentation-beta0.1")
    first = validate({**head_raw("segmentation"), "method_args": {**BODY, "pretrain": True}})
    assert first.run_name() == "multitask_head-fp-pretrain-resnet10n-segmentation-beta0.1"
    train_experiment(first, tmp_path, progress=False)
    second = head_raw("segmentation")
    second["method_args"] = {**BODY, "from_pretrain": True}
    second["train"]["stages"][0]["epochs"] = 1
    second["train"]["max_steps_per_epoch"] = 1
    second["train"]["stages"][0]["optimizer"]["lr"] = 1e-12  # one near-zero step: the weights stay the start's
    train_experiment(validate(second), tmp_path, progress=False)
    _, pre = load_run(tmp_path, first.run_name(), torch.device("cpu"))
    _, final = load_run(tmp_path, "multitask_head-fp-resnet10n-segmentation-beta0.1", torch.device("cpu"))
    w_pre = pre.heads["segmentation"].classifier[-1].weight
    w_final = final.heads["segmentation"].classifier[-1].weight
    assert torch.allclose(w_pre, w_final, atol=1e-6)
    # ... and not where a head starts without the first stage (the trainer seeds before building)
    from splitbench.runs import Run

    config = validate(second)
    torch.manual_seed(config.train.seed)
    start = Run(config, tmp_path).structure(torch.device("cpu"))
    assert not torch.allclose(start.heads["segmentation"].classifier[-1].weight, w_final, atol=1e-3)


def test_cli_evaluates_a_multitask_model_and_reports_every_task(mt_out, tmp_path, caplog):
    """`splitbench evaluate` on a multi-task config: four records, and one log line naming each task's metric."""
    import yaml
    from test_cli import run

    out = tmp_path / "out"
    shutil.copytree(mt_out, out)
    (out / "results.jsonl").unlink(missing_ok=True)
    config = tmp_path / "multitask.yaml"
    config.write_text(yaml.safe_dump(multitask_raw()))
    with caplog.at_level("INFO", logger="splitbench"):
        assert run("evaluate", config, "--out", out) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["multitask", "classification", "detection", "segmentation"]
    (line,) = [m for m in caplog.messages if m.startswith("multitask-fp-")]
    for label in ("Top-1 accuracy", "mAP@[.5:.95]", "mIoU"):
        assert label in line


def test_the_multitask_model_over_http_answers_every_task_as_evaluate(mt_out, tmp_path):
    """Evaluating the composition leaves its folder; exported and served from it, one device bitstream per
    image is answered for all three tasks: classification top-1 equal to evaluate's, every answer equal to the
    in-process pipeline's, and the bytes those of the body's own stream."""
    pytest.importorskip("onnxruntime")
    from test_server_tasks import close

    from splitbench.runtime.app import ServeSettings, create_app
    from splitbench.runtime.client import ClientOptions, run_device
    from splitbench.runtime.dataset_inputs import dataset_samples
    from splitbench.runtime.device import Device
    from splitbench.runtime.export import export_run
    from splitbench.runtime.serve import ThreadedServer, free_port
    from splitbench.runtime.server import Server

    out = tmp_path / "out"
    shutil.copytree(mt_out, out)
    config = validate(multitask_raw())
    record = evaluate_experiment(config, out, progress=False)
    run_dir = out / config.run_name()
    bundle = export_run(run_dir, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["method"], manifest["task"]) == ("multitask", "multitask")
    server = Server(run_dir)
    assert server.describe()["tasks"] == ["classification", "detection", "segmentation"]
    samples = dataset_samples("shapes", config.eval.split, config.eval.num_samples, config.data.image_size,
                              config.data.seed)
    settings = ServeSettings(port=free_port(), max_batch=4, max_delay_ms=10)
    with ThreadedServer(create_app(server, settings), settings) as url:
        served = run_device(Device(bundle), samples, ClientOptions(url, concurrency=2))
    assert served["answered"] == len(samples) == 12
    assert served["accuracy"]["top1"] == pytest.approx(record["metrics"]["top1"])
    pipeline = server.pipeline
    images = torch.stack([torch.from_numpy(s.image) for s in samples])
    expected = pipeline.network.answers(pipeline.server(pipeline.mobile(images)), server.top_k)
    answers = [e["predictions"] for e in served["images"]]
    assert all(set(a) == {"classification", "detection", "segmentation"} for a in answers)
    assert all(close(a, e) for a, e in zip(answers, expected, strict=True))
    body = LearnedPipeline(pipeline.network, backend="constriction").mobile(images)
    assert [e["bytes"]["payload"] for e in served["images"]] == [len(s) for s in body]
