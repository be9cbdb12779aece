"""Fault injection for the kill scripts: SIGKILL this process group just before the N-th filesystem change.

Loaded only when tests/reliability/kill_training.py or kill_assembly.py put this folder first on PYTHONPATH and
set DRAPE_KILL_HOOK; the code under test runs unmodified. Python's audit hooks see every file opened for writing,
rename/replace, mkdir, remove/rmdir and rmtree *before* the operation happens, so "kill at operation N" lands
exactly between two steps of a commit protocol (temp file written, not yet renamed; version renamed, config not
yet replaced; ...) -- the moments a timer rarely hits. Files written by C++ (torch.save) are not audited: the
timed and polling kills of the scripts cover those.

DRAPE_KILL_HOOK is JSON: {"root": only paths under it are seen, "log": file that receives one line per operation
seen ("<n>\\t<event>\\t<path>"), "kill_at": N (0 = only log), "pattern": optional regex; when set, only the
operations whose "<event>\\t<path>" matches it count towards N (all are logged)}.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install(spec: dict) -> None:
    root = os.path.realpath(spec["root"])
    kill_at = int(spec.get("kill_at") or 0)
    pattern = re.compile(spec["pattern"]) if spec.get("pattern") else None
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    state = {"n": 0, "matched": 0, "rmtree": False, "busy": False}

    def under_root(path) -> bool:
        if isinstance(path, int):
            return False
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        return os.path.realpath(os.path.abspath(path)).startswith(root + os.sep) or os.path.realpath(path) == root

    def describe(event: str, args: tuple) -> str | None:
        """The operation as "<event>\\t<path>" when it changes something under root, else None."""
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE_FLAGS)
            return f"open-w\t{path}" if writing and under_root(path) else None
        if event == "os.rename":
            return f"rename\t{args[0]} -> {args[1]}" if under_root(args[1]) or under_root(args[0]) else None
        if event == "shutil.rmtree":
            state["rmtree"] = under_root(args[0])
            return f"rmtree\t{args[0]}" if state["rmtree"] else None
        if event in ("os.remove", "os.rmdir", "os.mkdir"):
            path, dir_fd = args[0], args[-1]
            inside = state["rmtree"] if dir_fd not in (None, -1) else under_root(path)  # rmtree works by dir fd
            return f"{event[3:]}\t{path}" if inside else None
        if event == "shutil.copyfile":
            return f"copy\t{args[1]}" if under_root(args[1]) else None
        return None

    def hook(event: str, args: tuple) -> None:
        if state["busy"] or event not in ("open", "os.rename", "shutil.rmtree", "os.remove", "os.rmdir",
                                          "os.mkdir", "shutil.copyfile"):
            return
        state["busy"] = True
        try:
            line = describe(event, args)
            if line is None:
                return
            state["n"] += 1
            os.write(log_fd, f"{state['n']}\t{line}\n".encode())
            if pattern is not None and not pattern.search(line):
                return
            state["matched"] += 1
            if state["matched"] == kill_at:
                os.write(log_fd, f"KILL\t{state['n']}\t{line}\n".encode())
                os.killpg(os.getpgrp(), signal.SIGKILL)
        finally:
            state["busy"] = False

    sys.addaudithook(hook)


if os.environ.get("DRAPE_KILL_HOOK"):
    _install(json.loads(os.environ["DRAPE_KILL_HOOK"]))
