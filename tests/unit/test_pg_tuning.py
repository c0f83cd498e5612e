import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.tuning import memory_settings


def mb(value: str) -> int:
    assert value.endswith("MB"), value
    return int(value[:-2])


def test_quarter_and_three_quarters_on_a_mid_size_host():
    settings = memory_settings(16384, max_connections=100)
    assert mb(settings["shared_buffers"]) == 4096
    assert mb(settings["effective_cache_size"]) == 12288
    assert mb(settings["maintenance_work_mem"]) == 1024
    assert mb(settings["work_mem"]) == (16384 - 4096) // 300


def test_small_host_keeps_the_default_shared_buffers():
    settings = memory_settings(1024)
    assert mb(settings["shared_buffers"]) == 128
    assert mb(settings["effective_cache_size"]) == 768
    assert mb(settings["maintenance_work_mem"]) == 64  # floor
    assert mb(settings["work_mem"]) == 4  # floor


def test_tiny_host_never_gets_more_than_a_quarter():
    assert mb(memory_settings(256)["shared_buffers"]) == 64


def test_large_host_is_capped():
    settings = memory_settings(512 * 1024, max_connections=50)
    assert mb(settings["shared_buffers"]) == 16384
    assert mb(settings["maintenance_work_mem"]) == 2048
    assert mb(settings["work_mem"]) == 256


def test_more_connections_mean_less_work_mem():
    assert mb(memory_settings(32768, 100)["work_mem"]) > mb(memory_settings(32768, 400)["work_mem"])


@pytest.mark.parametrize(("memory", "connections"), [(0, 100), (-5, 100), (1024, 0)])
def test_rejects_nonsense(memory, connections):
    with pytest.raises(ValueError, match="must be positive"):
        memory_settings(memory, connections)
