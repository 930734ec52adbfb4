"""Running the installed ``mrag`` command as a user does, and reading its sockets from the OS."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil


def mrag_command() -> str:
    """The ``mrag`` console script installed beside this interpreter (the user's command)."""
    found = shutil.which("mrag", path=str(Path(sys.executable).parent))
    assert found, "the mrag console script is not installed in this environment"
    return found


def user_env(**extra: str) -> dict[str, str]:
    """This session's environment without the settings that only the test suite makes.

    The suite's conftest sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` before importing Ray; a user
    has no such variable, so the command must keep Ray on loopback by itself.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(extra)
    return env


def tcp_listeners(pid: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``pid`` and its children."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for process in processes:
        try:
            name = process.name()
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def watch_listeners(
    process: subprocess.Popen, *, timeout_s: float, until: float | None = None
) -> set[tuple[str, str, int]]:
    """Polls the listeners of ``process`` (and its children) until it exits, or for ``until``
    seconds when given; returns every one seen."""
    seen: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + timeout_s
    stop_at = time.monotonic() + until if until is not None else None
    while process.poll() is None:
        seen |= tcp_listeners(process.pid)
        now = time.monotonic()
        if now > deadline:
            process.kill()
            raise TimeoutError(f"{process.args} still running after {timeout_s} s")
        if stop_at is not None and now > stop_at:
            break
        time.sleep(0.2)
    return seen


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def not_on_loopback(listeners: set[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return sorted(entry for entry in listeners if not is_loopback(entry[1]))


def stop_tree(process: subprocess.Popen, *, grace_s: float = 20.0) -> None:
    """SIGINT (as Ctrl-C) to the command, then kills whatever of its process tree is left."""
    import signal

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
