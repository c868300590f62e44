"""One run per output_dir (lock with stale detection) and the writable check done before loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunery.errors import ConfigError, ResourceError
from tunery.train.output_lock import LOCK_FILE, acquire_output_lock, ensure_writable_dir, lock_holder


@pytest.fixture
def other_process():
    """A live process that is not this one (stands for a second run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_second_lock_is_refused_and_released_lock_can_be_taken(tmp_path, other_process):
    lock = acquire_output_lock(tmp_path, pid=other_process.pid)
    data = json.loads((tmp_path / LOCK_FILE).read_text())
    assert data["pid"] == other_process.pid and data["host"]
    with pytest.raises(ResourceError, match=f"in use by another Tunery run \\(pid {other_process.pid}"):
        acquire_output_lock(tmp_path)
    assert lock_holder(tmp_path).pid == other_process.pid
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    with acquire_output_lock(tmp_path) as mine:
        assert mine.pid == os.getpid() and lock_holder(tmp_path).pid == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    acquire_output_lock(tmp_path, pid=dead.pid)  # written for a process that has ended
    assert lock_holder(tmp_path) is None and not (tmp_path / LOCK_FILE).exists()
    acquire_output_lock(tmp_path, pid=dead.pid)
    lock = acquire_output_lock(tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_recycled_pid_is_not_mistaken_for_the_run(tmp_path):
    # our own pid, but with another start time: the process that wrote the lock is gone
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "start": -5}))
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("no /proc: start times cannot be compared")
    assert lock_holder(tmp_path) is None


def test_handover_lets_the_child_run_acquire(tmp_path, other_process):
    ui = acquire_output_lock(tmp_path)  # the web UI, before it starts the run
    ui.handover(other_process.pid)
    child = acquire_output_lock(tmp_path, pid=other_process.pid)  # the run finds its own pid: proceeds
    with pytest.raises(ResourceError):
        acquire_output_lock(tmp_path)  # anyone else is refused
    child.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_writable_check(tmp_path):
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    assert not [p for p in (tmp_path / "a" / "b").iterdir()]  # the probe file is gone
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ConfigError, match="it is a file, not a folder"):
        ensure_writable_dir(file)
    with pytest.raises(ConfigError, match="cannot be used as an output folder"):
        ensure_writable_dir(file / "under")
    if os.path.isdir("/proc/self"):
        with pytest.raises(ConfigError, match="cannot be used as an output folder"):
            ensure_writable_dir("/proc/tunery-out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot be used as an output folder"):
            ensure_writable_dir(folder)
    finally:
        folder.chmod(0o755)
