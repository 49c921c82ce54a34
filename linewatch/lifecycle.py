"""What a worker process promises the processes that start and watch it: its ready line and exit codes.

The demo, the benchmarks and the tests start ``python -m linewatch worker`` as a child
process and wait for :data:`READY_MESSAGE` in its log before they produce anything; a
supervisor (systemd, Docker, Kubernetes) restarts a worker that exits with
:data:`EXIT_INFRASTRUCTURE`. These constants live here, apart from the Faust runtime in
:mod:`linewatch.streams.runtime` that emits them, so that watching a worker does not mean
importing Faust and the agents.
"""

from __future__ import annotations

#: Exit status when infrastructure stays unavailable (EX_SOFTWARE-like; supervisors restart on it).
EXIT_INFRASTRUCTURE = 70
#: Logged once the worker holds partitions; the demo and tests wait for it.
READY_MESSAGE = "linewatch worker ready:"
