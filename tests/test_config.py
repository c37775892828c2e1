import pytest

from splitbench.errors import ConfigError
from splitbench.experiment import load_configs
from splitbench.registry import UnknownNameError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """
data: {dataset: shapes, image_size: 32}
backbone: {name: resnet10n}
"""


def test_typo_names_the_key_the_allowed_ones_and_a_suggestion(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    path = write(tmp_path, "c.yaml", "base: base.yaml\nmethod: classifier\ndata: {batchsize: 4}\n")
    with pytest.raises(ConfigError) as error:
        load_configs(path)
    message = str(error.value)
    assert "data.batchsize" in message and "did you mean 'batch_size'" in message
    assert "image_size" in message  # the allowed keys are listed


def test_method_args_are_validated_by_the_method(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    path = write(tmp_path, "c.yaml", "base: base.yaml\nmethod: entropic_student\nmethod_args: {beta: 1, chanels: 8}\n")
    with pytest.raises(ConfigError, match=r"method_args.chanels.*did you mean 'channels'"):
        load_configs(path)
    valid = write(tmp_path, "v.yaml", "base: base.yaml\nmethod: entropic_student\nmethod_args: {beta: 1}\n")
    for key, value in (("beta", 0), ("beta", -1), ("channels", 0)):
        with pytest.raises(ConfigError, match=f"method_args.{key}"):
            load_configs(valid, [f"method_args.{key}={value}"])


def test_unknown_method_lists_the_known_ones(tmp_path):
    path = write(tmp_path, "c.yaml", BASE + "method: entropic_studnet\n")
    with pytest.raises(UnknownNameError, match="entropic_student"):
        load_configs(path)


def test_base_inheritance_overrides_and_list_indices(tmp_path):
    write(tmp_path, "base.yaml", BASE + "train:\n  stages: [{name: train, epochs: 3}]\n")
    path = write(tmp_path, "c.yaml", "base: base.yaml\nmethod: classifier\ndata: {batch_size: 8}\n")
    (config,) = load_configs(path, ["train.stages.0.epochs=5", "train.stages.0.optimizer.lr=0.01"])
    assert config.data.image_size == 32 and config.data.batch_size == 8  # merged, not replaced
    assert config.train.stages[0].epochs == 5 and config.train.stages[0].optimizer.lr == 0.01
    with pytest.raises(ConfigError, match="not an index"):
        load_configs(path, ["train.stages.3.epochs=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_configs(path, ["data.batch_size"])


def test_inheritance_cycle_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_configs(tmp_path / "a.yaml")


def test_sweep_expands_and_an_override_pins_a_dimension(tmp_path):
    path = write(tmp_path, "c.yaml", BASE + """method: input_codec
sweep: {method_args.codec: [jpeg, webp], method_args.quality: [10, 50, 90]}
""")
    configs = load_configs(path)
    assert len(configs) == 6 and len({c.hash() for c in configs}) == 6
    assert {c.run_name() for c in configs} >= {"input_codec-jpeg-resnet10n-quality10"}
    pinned = load_configs(path, ["method_args.quality=30"])
    assert [c.args().quality for c in pinned] == [30, 30]


def test_yaml_cannot_run_code(tmp_path):
    path = write(tmp_path, "c.yaml", "method: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_configs(path)


def test_missing_file_and_packaged_configs():
    with pytest.raises(ConfigError, match="not found"):
        load_configs("no/such.yaml")
    configs = load_configs("shapes/entropic_student.yaml")  # found inside the package
    assert len(configs) >= 3 and all(c.method == "entropic_student" for c in configs)
