"""`perpsim up` as a new user runs it: twice in the same folder, and stopped with Ctrl-C
in a terminal (the interrupt reaches the whole process group)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from services.runtime.broker import die_with_parent
from tests.integration.conftest import free_ports

pytestmark = pytest.mark.integration

UP = [sys.executable, "-m", "services.cli", "up", "--log-level", "INFO"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is not alive
        return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except OSError:
        return False


def started_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"(?:started \w+|embedded broker listening on \S+) \(pid (\d+)\)", output)]


def test_up_twice_in_the_same_folder_both_run_clean(tmp_path):
    for run in (1, 2):
        result = subprocess.run([*UP, "--duration", "12", "--no-dashboard", *free_ports()],
                                cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, (run, result.stdout[-2000:], result.stderr[-4000:])
        assert "Traceback" not in result.stderr, (run, result.stderr[-4000:])
        # each run has its own folder, and reports/latest is the newest
        folders = sorted(p for p in (tmp_path / "reports").glob("*-live-flash-crash-seed*") if p.is_dir())
        assert len(folders) == run, folders
        assert (tmp_path / "reports" / "latest").resolve() == folders[-1].resolve()
        summary = json.loads((folders[-1] / "summary.json").read_text())
        assert summary["invariants"] == "hold" and summary["run"] == "complete", (run, summary)
        assert summary["orders"] > 100, (run, summary)
        pids = started_pids((folders[-1] / "logs" / "up.log").read_text())
        assert len(pids) == 6 and not [pid for pid in pids if alive(pid)]


def test_ctrl_c_in_a_terminal_stops_everything_and_writes_a_partial_report(tmp_path):
    pid, fd = pty.fork()
    if pid == 0:  # the child: `up` in a terminal of its own, as a user starts it
        os.chdir(tmp_path)
        os.execv(sys.executable, [*UP, "--duration", "120", *free_ports()])
    output, interrupted_at, status, trading_since = b"", None, None, None
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                output += os.read(fd, 65536)
            except OSError:  # the terminal closed: `up` has exited
                pass
        if trading_since is None and b"orders / s" in output:  # the dashboard is up
            trading_since = time.monotonic()
        if interrupted_at is None and trading_since and time.monotonic() - trading_since > 8:
            os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground process group
            interrupted_at = time.monotonic()
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    text = output.decode(errors="replace")
    assert interrupted_at is not None, text[-3000:]
    assert os.waitstatus_to_exitcode(status) == 0, text[-4000:]
    assert time.monotonic() - interrupted_at < 20, "stopping took too long"
    assert "Traceback" not in text, text[-4000:]
    latest = tmp_path / "reports" / "latest"
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["run"] == "interrupted (partial report)" and summary["invariants"] == "hold", summary
    assert "service=" not in text  # the services logged to the run's folder, not over the dashboard
    for panel in ("orders / s", "latency p50", "SOL-PERP mark (index)", "SOL-PERP open interest", "SOL-PERP funding",
                  "liquidations isolated / cross", "insurance fund", "web view"):
        assert panel in text, panel
    pids = started_pids((latest / "logs" / "up.log").read_text())
    assert len(pids) == 6  # the broker and five services
    time.sleep(0.5)
    assert not [p for p in pids if alive(p)]
    # and the next run in the same folder starts clean
    result = subprocess.run([*UP, "--duration", "8", "--no-dashboard", *free_ports()],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]


def start_up_and_freeze_its_broker(tmp_path) -> tuple[subprocess.Popen, int, list[int]]:
    """`up` trading, then its broker stopped (SIGSTOP): every request to it hangs."""
    up = subprocess.Popen([*UP, "--duration", "300", "--no-dashboard", *free_ports()], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    os.set_blocking(up.stdout.fileno(), False)
    output = b""
    deadline = time.monotonic() + 120
    while output.count(b"orders/s=") < 2:  # the second progress line: five seconds of trading
        assert time.monotonic() < deadline and up.poll() is None, output.decode(errors="replace")[-3000:]
        time.sleep(0.2)
        output += up.stdout.read() or b""
    pids = started_pids(output.decode(errors="replace"))
    broker = int(re.search(rb"embedded broker listening on \S+ \(pid (\d+)\)", output).group(1))
    os.kill(broker, signal.SIGSTOP)
    return up, broker, pids


def finish(up: subprocess.Popen, limit_s: float) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        rest, _ = up.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        up.kill()
        rest, _ = up.communicate()
        raise AssertionError(f"`up` still ran {limit_s:g} s after the interrupt: {rest.decode(errors='replace')[-3000:]}")
    return up.returncode, rest.decode(errors="replace"), time.monotonic() - started


def test_ctrl_c_ends_the_run_while_its_broker_hangs_and_says_the_invariants_were_not_checked(tmp_path):
    """Before, a tick waiting on a broker that did not answer held the interrupt for 12
    minutes: the client library waits up to 40 s per record, and the participants' loop
    only looked at the stop between ticks."""
    up, broker, pids = start_up_and_freeze_its_broker(tmp_path)
    try:
        up.send_signal(signal.SIGINT)
        code, text, took = finish(up, 90)  # 1 s for the tick, 23 for the settling, 3 for the bus, 2 x 10 for the services
    finally:
        if alive(broker):
            os.kill(broker, signal.SIGCONT)
    assert code == 0, text[-3000:]
    assert "stopping: the services save their state" in text
    assert "Future exception was never retrieved" not in text and "Traceback" not in text, text[-3000:]
    summary = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    assert summary["run"] == "interrupted (partial report)"
    assert summary["invariants"].startswith("not checked: the services' progress could not be read"), summary
    time.sleep(0.5)
    assert len(pids) == 6 and not [pid for pid in pids if alive(pid)]


def test_a_second_ctrl_c_stops_everything_at_once(tmp_path):
    up, broker, pids = start_up_and_freeze_its_broker(tmp_path)
    try:
        up.send_signal(signal.SIGINT)
        time.sleep(3)  # stopping in order: the participants wait on the broker
        up.send_signal(signal.SIGINT)
        code, text, took = finish(up, 20)
    finally:
        if alive(broker):
            os.kill(broker, signal.SIGCONT)
    assert code == 130, text[-3000:]
    assert "stopping at once: every process of the run killed, no report" in text
    assert took < 10, f"{took:.1f} s after the second Ctrl-C"
    time.sleep(0.5)
    assert len(pids) == 6 and not [pid for pid in pids if alive(pid)]
