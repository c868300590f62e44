"""use_ray: LLaMA-Factory's Ray keys -> Ray Train's ScalingConfig/RunConfig, and a worker's user error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunery.config import parse_config
from tunery.errors import ConfigError, TuneryError
from tunery.train import ray_train

pytest.importorskip("ray")

BASE = {"model_name_or_path": "/nonexistent/model", "dataset": "d", "output_dir": "o"}


def test_lf_ray_keys_become_ray_train_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config("train", {**BASE, "use_ray": True, "ray_num_workers": 4, "placement_strategy": "spread",
                                 "resources_per_worker": '{"GPU": 1, "CPU": 8}', "ray_run_name": "run1"})
    t = cfg.training
    assert t.use_ray and t.ray_num_workers == 4
    assert ray_train.scaling_settings(t, gpus_visible=False) == {
        "num_workers": 4, "use_gpu": True, "resources_per_worker": {"GPU": 1, "CPU": 8}, "placement_strategy": "SPREAD"}
    # default ray_storage_path ./saves, made absolute against the working folder (workers may start elsewhere)
    assert ray_train.storage_settings(t) == {"name": "run1", "storage_path": str(Path(tmp_path) / "saves")}


def test_default_resources_follow_the_machine():
    t = parse_config("train", {**BASE, "use_ray": True}).training
    assert ray_train.scaling_settings(t, gpus_visible=True)["resources_per_worker"] == {"GPU": 1}
    cpu = ray_train.scaling_settings(t, gpus_visible=False)
    assert cpu["resources_per_worker"] == {"CPU": 1} and cpu["use_gpu"] is False and cpu["num_workers"] == 1


def test_use_ray_from_the_environment_as_in_llamafactory(monkeypatch):
    assert not parse_config("train", BASE).training.use_ray
    monkeypatch.setenv("USE_RAY", "1")
    assert parse_config("train", BASE).training.use_ray


@pytest.mark.parametrize("key, value, message", [
    ("ray_num_workers", 0, "ray_num_workers"), ("placement_strategy", "RANDOM", "placement_strategy"),
    ("ray_storage_filesystem", "ftp", "ray_storage_filesystem"), ("resources_per_worker", "[1]", "resources_per_worker")])
def test_ray_settings_outside_their_domain_are_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config("train", {**BASE, "use_ray": True, key: value})


def test_a_workers_user_error_comes_back_with_its_rank():
    from ray.train import WorkerGroupError

    inner = TuneryError("dataset 'd' is not in dataset_info.json")
    wrapped = RuntimeError("worker died")
    wrapped.__cause__ = inner
    err = WorkerGroupError("boom", {1: wrapped, 0: RuntimeError("peer gone")})
    found = ray_train.first_user_error(err)
    assert isinstance(found, TuneryError) and found.message == "[rank 1] dataset 'd' is not in dataset_info.json"
    assert ray_train.first_user_error(WorkerGroupError("boom", {0: RuntimeError("x")})) is None
