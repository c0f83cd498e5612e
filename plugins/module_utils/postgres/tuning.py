# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Memory settings derived from a host's memory, the way the runbooks hand-tune them."""

from __future__ import annotations

# Below this much memory per instance the host is "small": shared_buffers stays at PostgreSQL's
# own default so the OS, connections and page cache keep room.
SMALL_HOST_MB = 2048
SMALL_HOST_SHARED_BUFFERS_MB = 128
SHARED_BUFFERS_CAP_MB = 16384  # past this the page cache serves better than shared_buffers
MAINTENANCE_WORK_MEM_CAP_MB = 2048
WORK_MEM_FLOOR_MB = 4
WORK_MEM_CAP_MB = 256


def memory_settings(memory_mb: int, max_connections: int = 100) -> dict:
    """Memory settings for one instance that may use `memory_mb` of the host's memory.

    shared_buffers ~25 % (128MB on small hosts, at most 16GB), effective_cache_size ~75 %,
    maintenance_work_mem ~1/16 (at most 2GB), work_mem shares what shared_buffers leaves among
    max_connections with three sorts each (4MB to 256MB).
    """
    memory_mb = int(memory_mb)
    max_connections = int(max_connections)
    if memory_mb <= 0 or max_connections <= 0:
        raise ValueError(f"memory_mb and max_connections must be positive, got {memory_mb}, {max_connections}")
    if memory_mb < SMALL_HOST_MB:
        shared_buffers = min(SMALL_HOST_SHARED_BUFFERS_MB, memory_mb // 4)
    else:
        shared_buffers = min(memory_mb // 4, SHARED_BUFFERS_CAP_MB)
    work_mem = (memory_mb - shared_buffers) // (max_connections * 3)
    return {
        "shared_buffers": f"{shared_buffers}MB",
        "effective_cache_size": f"{memory_mb * 3 // 4}MB",
        "maintenance_work_mem": f"{max(64, min(memory_mb // 16, MAINTENANCE_WORK_MEM_CAP_MB))}MB",
        "work_mem": f"{max(WORK_MEM_FLOOR_MB, min(work_mem, WORK_MEM_CAP_MB))}MB",
    }
