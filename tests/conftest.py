import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


# Fixtures that train models: every test using one (directly or through another fixture) is marked `slow`,
# as are the tests that train themselves (marked where they are). `make test` runs them all;
# `pytest -m "not slow"` is the quick pass that trains nothing.
TRAINING_FIXTURES = {"trained_teacher", "trained", "task_out", "mt_out", "recipes_out", "finished"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """For modules that code many tiny per-sample tensors: on a shared, loaded CPU two threads only wait
    on each other. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_raw(method: str = "classifier", **sections) -> dict:
    """A config small enough to train in seconds on 2 CPU cores (32 px shapes, narrow ResNet-10)."""
    raw = {
        "method": method,
        "data": {"dataset": "shapes", "image_size": 32, "train_samples": 96, "val_samples": 40, "batch_size": 16},
        "backbone": {"name": "resnet10n"},
        "eval": {"batch_size": 20},
        "train": {"stages": [{"name": "train", "epochs": 2, "optimizer": {"name": "adam", "lr": 1e-3}}],
                  "log_every": 1},
    }
    if method == "entropic_student":
        raw["method_args"] = {"beta": 0.1, "channels": 8}
        raw["train"]["stages"] = [
            {"name": "bottleneck", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3}},
            {"name": "tail", "epochs": 1, "optimizer": {"name": "sgd", "lr": 1e-3}},
        ]
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def save_run(out: Path, seed: int = 0, sections: dict | None = None, **method_args) -> Path:
    """A tiny Entropic Student (fp) run folder as training leaves it, with random weights (``seed``) and the
    coder's tables built (nothing trains: seconds). Its encoder's output is widened so the latent spans many
    symbols. ``sections`` override config sections (another task and its head)."""
    from splitbench.experiment import validate
    from splitbench.runs import Run

    raw = tiny_raw("entropic_student", **(sections or {}))
    raw["method_args"].update(method_args)
    config = validate(raw)
    run = Run(config, out)
    model = run.structure(torch.device("cpu")).eval()
    bottleneck = model.trunk.bottleneck
    torch.manual_seed(seed)  # after building: the builders may seed themselves
    with torch.no_grad():  # random weights give a near-constant latent; widen it and perturb the density
        bottleneck.encoder[-1].weight.mul_(40)
        for p in bottleneck.coder.entropy_bottleneck.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bottleneck.coder.update()
    return write_run(run, model)


def write_run(run, model: torch.nn.Module) -> Path:
    """``run``'s folder as training leaves it (config.yaml, weights with their config), holding ``model``."""
    import yaml

    from splitbench.training.checkpoint import save_weights

    dumped = run.config.model_dump(mode="json")
    run.folder.mkdir(parents=True)
    (run.folder / "config.yaml").write_text(yaml.safe_dump(dumped, sort_keys=False))
    save_weights(model, run.weights, {"method": run.config.method, "config": dumped})
    return run.folder


def save_classifier_run(out: Path, seed: int = 0) -> Path:
    """A tiny unsplit (classifier) run folder with random weights (``seed``): the teacher that input-codec runs
    and the codec server load, in seconds."""
    from splitbench.experiment import validate
    from splitbench.runs import Run

    config = validate(tiny_raw())
    run = Run(config, out)
    torch.manual_seed(seed)
    return write_run(run, run.structure(torch.device("cpu")).eval())


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory):
    """A teacher trained once per session in its own --out; tests copy or point at it."""
    from splitbench.experiment import validate
    from splitbench.runs import train_experiment

    out = tmp_path_factory.mktemp("teacher_out")
    train_experiment(validate(tiny_raw()), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, bundle) of a tiny exported Entropic Student, shared by the server and client tests."""
    from splitbench.runtime.export import export_run

    run = save_run(tmp_path_factory.mktemp("served_runs"))
    return run, export_run(run, tmp_path_factory.mktemp("served_bundles") / "fp")


@pytest.fixture(scope="session")
def tiny_server(tiny_export):
    """The in-process server of :func:`tiny_export`'s run (one thread for torch: a shared CPU)."""
    from splitbench.runtime.server import Server

    return Server(tiny_export[0])
