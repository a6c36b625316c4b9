"""The process accounting the benches report: read from Linux's /proc, checked against work done here."""

import math
import subprocess
import sys
import time

from services.ops.memory import cpu_seconds, peak_rss_mb


def test_cpu_seconds_agree_with_pythons_own_count_and_ignore_sleep():
    before, started = cpu_seconds(), time.process_time()
    while time.process_time() - started < 0.3:  # CPU time, so a loaded machine only makes it take longer
        pass
    time.sleep(0.2)
    assert abs((cpu_seconds() - before) - (time.process_time() - started)) < 0.05  # /proc counts in 10 ms ticks


def test_another_process_is_read_and_a_gone_one_is_nan():
    holder = "import time; x = bytearray(80 * 2**20); print('holding', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"  # the memory is taken
        assert peak_rss_mb(child.pid) >= 80
        assert cpu_seconds(child.pid) >= 0
    finally:
        child.kill()
        child.wait()
    assert math.isnan(cpu_seconds(child.pid)) and math.isnan(peak_rss_mb(child.pid))
