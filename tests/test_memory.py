"""What keeps the process small: the SFTP adapter loads without invoke and PyYAML."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from concurrent.futures import ThreadPoolExecutor
import connector.sources.registry as registry
adapters = ["connector.sources.sftp", "connector.sources.ftp"] * 4
with ThreadPoolExecutor(8) as pool:  # (sources polled at once open their adapters at once)
    list(pool.map(registry._imported, adapters))
import paramiko.config
print(sorted(m for m in ("invoke", "yaml") if m in sys.modules), paramiko.config.invoke)
import invoke  # (not kept out for good: whoever wants it later gets it)
print(invoke.__name__)
"""


def test_adapters_load_without_invoke_and_leave_it_importable() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == ["[] None", "invoke"]
