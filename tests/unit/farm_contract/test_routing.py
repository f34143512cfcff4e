import pytest

from farm_contract.routing import (
    parse_host_spec,
    queue_for,
    queues_for_host,
    resolve_gpu,
    slug_for_device_name,
    split_backend,
)


@pytest.mark.parametrize("name,slug", [
    ("H100", "h100-80gb"), ("H100-80GB", "h100-80gb"), ("NVIDIA H100 80GB HBM3", "h100-80gb"),
    ("NVIDIA H100 PCIe", "h100-pcie"), ("A100-40GB", "a100-40gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("L4", "l4"), ("NVIDIA L4", "l4"), ("Tesla T4", "t4"), ("nvidia l40s", "l40s"),
])
def test_names_resolve_to_one_canonical_model(name, slug):
    assert resolve_gpu(name).slug == slug


def test_unknown_gpu_lists_known_names():
    with pytest.raises(ValueError, match="known: .*H100"):
        resolve_gpu("Voodoo5")


def test_uncatalogued_driver_name_gets_a_stable_slug():
    assert slug_for_device_name("NVIDIA Future GPU 200GB") == "future-gpu-200gb"


def test_queue_names():
    assert queue_for("gpu", "h100-80gb", 1) == "gpu.h100-80gb.x1"
    assert queue_for("sim", "l4", 4) == "sim.l4.x4"
    with pytest.raises(ValueError):
        queue_for("tpu", "l4", 1)
    with pytest.raises(ValueError):
        queue_for("gpu", "l4", 0)


def test_host_queues_cover_every_count_up_to_the_host_size():
    assert queues_for_host("gpu", {"h100-80gb": 2, "l4": 1}) == [
        "gpu.h100-80gb.x1", "gpu.h100-80gb.x2", "gpu.l4.x1"]


def test_sim_prefix_and_host_specs():
    assert split_backend("sim:H100") == ("sim", "H100")
    assert split_backend("H100") == ("gpu", "H100")
    assert parse_host_spec("H100-80GBx2") == ("h100-80gb", 2)
    assert parse_host_spec("sim:L4") == ("l4", 1)
    assert parse_host_spec("RTX4090") == ("rtx-4090", 1)
    assert parse_host_spec("RTX4090x2") == ("rtx-4090", 2)
    with pytest.raises(ValueError, match="count must be at least 1"):
        parse_host_spec("L4x0")
