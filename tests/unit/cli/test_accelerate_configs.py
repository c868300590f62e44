"""The accelerate launcher configs shipped in examples/accelerate: accelerate reads each, and the
QLoRA one has what FSDP needs to shard a bitsandbytes 4-bit base."""

from __future__ import annotations

from pathlib import Path

import pytest

ACCELERATE_DIR = Path(__file__).resolve().parents[3] / "examples" / "accelerate"


@pytest.mark.parametrize("name", sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml")))
def test_accelerate_reads_every_shipped_config(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_DIR / name))
    assert str(config.distributed_type.value) == "FSDP" and not config.use_cpu
    assert config.fsdp_config["fsdp_version"] in (1, 2)
    assert config.num_processes >= config.num_machines >= 1


def test_the_qlora_config_loads_on_rank_0_and_keeps_frozen_and_trained_weights_apart():
    from accelerate.commands.config.config_args import load_config_from_file

    fsdp = load_config_from_file(str(ACCELERATE_DIR / "fsdp_config_qlora.yaml")).fsdp_config
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is True and fsdp["fsdp_sync_module_states"] is True
    assert fsdp["fsdp_use_orig_params"] is False
