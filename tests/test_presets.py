"""Presets are YAML files in `configs/`: only their differences from the defaults, read strictly,
selectable by name or path, and shipped inside the package."""

import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from ezv.config import (
    PRESET_NAMES,
    Config,
    ConfigError,
    load_config_file,
    load_preset,
    presets_dir,
    to_plain,
    write_run_config,
)
from ezv.train import resolve_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat(plain, prefix=""):
    out = {}
    for key, value in plain.items():
        if isinstance(value, dict) and key != "env_options":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_each_preset_file_states_only_what_differs_from_the_defaults(name):
    """A preset states what differs from `Config()`, or from the preset it names as its `base`."""
    with open(os.path.join(REPO, "configs", f"{name}.yaml")) as f:
        data = yaml.safe_load(f)
    stated = flat(data["config"])
    defaults = flat(to_plain(load_preset(data["base"]) if "base" in data else Config()))
    assert stated["preset"] == name
    for key, value in stated.items():
        assert key in defaults, key
        if key != "preset":
            assert value != defaults[key], f"{name}.yaml restates {key}: {value!r}"


def test_the_source_checkout_reads_its_top_level_configs_folder():
    assert os.path.samefile(presets_dir(), os.path.join(REPO, "configs"))


def write_yaml(path, data):
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


def test_a_misspelt_key_is_an_error_that_names_it_and_suggests_the_field(tmp_path):
    path = write_yaml(tmp_path / "p.yaml", {"config": {"num_envs": 2, "learner": {"batch_sise": 3}}})
    with pytest.raises(ConfigError, match=r"learner\.batch_sise \(did you mean learner\.batch_size\?\)"):
        load_config_file(path)


@pytest.mark.parametrize("config, message", [
    ({"num_envs": "eight"}, "num_envs must be an integer"),
    ({"learner": {"learning_rate": "fast"}}, "learner.learning_rate must be a number"),
    ({"network": 3}, "network must be a mapping"),
    ({"learner": {"augment": 1}}, "learner.augment must be a boolean"),
])
def test_a_value_of_the_wrong_type_is_an_error_that_names_the_key(tmp_path, config, message):
    with pytest.raises(ConfigError, match=message):
        load_config_file(write_yaml(tmp_path / "p.yaml", {"config": config}))


def test_a_file_without_a_config_mapping_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no `config:` mapping"):
        load_config_file(write_yaml(tmp_path / "p.yaml", {"learner": {"batch_size": 3}}))


def test_preset_by_path_applies_a_file_on_top_of_the_defaults_and_flags_on_top_of_it(tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", {"config": {"num_envs": 2, "network": {"architecture": "mlp"}}})
    cfg = resolve_config(["--env-id", "CartPole-v1", "--preset", path, "--learner.batch-size", "16"])
    assert cfg.num_envs == 2 and cfg.network.architecture == "mlp" and cfg.learner.batch_size == 16
    assert cfg.learner.optimizer == Config().learner.optimizer  # everything else: the defaults


def test_a_previous_runs_config_yaml_works_as_a_preset(tmp_path):
    original = dataclasses.replace(resolve_config(["--env-id", "CartPole-v1", "--num-envs", "2", "--seed", "5"]),
                                   run_dir=str(tmp_path))
    write_run_config(str(tmp_path), original, {"derived": {"num_simulations": 8}})
    cfg = resolve_config(["--preset", str(tmp_path / "config.yaml"), "--seed", "6"])
    assert cfg == dataclasses.replace(original, seed=6, run_dir=None)
    assert cfg.env_id == "CartPole-v1" and cfg.preset == "classic"


def test_an_unknown_preset_name_lists_the_choices():
    with pytest.raises(ConfigError, match="dmc_state"):
        resolve_config(["--env-id", "CartPole-v1", "--preset", "clasic"])


def test_a_non_editable_install_ships_the_presets(tmp_path):
    """Build the wheel, unpack it as pip would install it, and load every preset from that copy
    with the working directory elsewhere (no source checkout on the path)."""
    # Built from a copy: pip leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "runs",
                                                                "benchmarks", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"),
                    str(source)], check=True)
    (wheel,) = os.listdir(tmp_path / "wheel")
    site = tmp_path / "site"
    zipfile.ZipFile(tmp_path / "wheel" / wheel).extractall(site)
    code = ("import ezv, ezv.config as c; print(ezv.__file__); print(c.presets_dir()); "
            "print([c.load_preset(n).preset for n in c.PRESET_NAMES])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(str(site)) and out[1].startswith(str(site))
    assert out[2] == str(list(PRESET_NAMES))


def test_a_preset_built_on_another_names_a_preset_as_its_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: classic\nconfig:\n  search:\n    kind: puct\n")
    cfg = load_config_file(str(path))
    assert cfg.search.kind == "puct" and cfg.learner.batch_size == load_preset("classic").learner.batch_size
    path.write_text("base: clasic\nconfig:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="base 'clasic' is not a preset name"):
        load_config_file(str(path))
