"""Logic of the recording `nvme` stand-in.  A fixture writes a tiny executable wrapper into
tmp_path that imports this module and calls main(state_dir, argv).

It records each argv as a JSON line in <state_dir>/calls.jsonl and plays what
<state_dir>/plan.json says for each NQN: exit code, stderr ("already connected", failures),
and the sysfs entries the kernel would create, optionally after a delay (a forked child creates
them while the stand-in has already exited, like a slow udev/kernel).  Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.host import fake_sysfs


def _numbers(directory: Path, prefix: str) -> set[int]:
    if not directory.is_dir():
        return set()
    found = set()
    for entry in directory.iterdir():
        rest = entry.name[len(prefix) :]
        if entry.name.startswith(prefix) and rest.isdigit():
            found.add(int(rest))
    return found


def _free(used: set[int]) -> int:
    number = 0
    while number in used:
        number += 1
    return number


def _next_response(state: Path, plan: dict[str, Any], verb: str, nqn: str) -> dict[str, Any]:
    responses = plan.get(verb, {}).get(nqn)
    if not responses:
        return {}
    counters_path = state / "counters.json"
    counters = json.loads(counters_path.read_text()) if counters_path.exists() else {}
    key = f"{verb}:{nqn}"
    index = counters.get(key, 0)
    counters[key] = index + 1
    counters_path.write_text(json.dumps(counters))
    return dict(responses[min(index, len(responses) - 1)])


def _appear(sys_root: Path, dev_root: Path, nqn: str, spec: dict[str, Any]) -> None:
    subsys = spec.get("subsys")
    if subsys is None:
        subsys = _free(_numbers(sys_root / "class/nvme-subsystem", "nvme-subsys"))
    controllers = spec.get("controllers")
    if controllers is None:
        controllers = [_free(_numbers(sys_root / "class/nvme", "nvme"))]
    fake_sysfs.add_subsystem(
        sys_root,
        dev_root,
        subsys=subsys,
        nqn=nqn,
        controllers=controllers,
        namespaces=spec.get("namespaces", [1]),
        multipath=spec.get("multipath", True),
    )


def _option(argv: list[str], flag: str) -> str | None:
    for index, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[index + 1]
    return None


def main(state_dir: str, argv: list[str]) -> int:
    state = Path(state_dir)
    with open(state / "calls.jsonl", "a", encoding="utf-8") as calls:
        calls.write(json.dumps({"argv": argv}) + "\n")
    plan = json.loads((state / "plan.json").read_text())
    sys_root, dev_root = Path(plan["sys_root"]), Path(plan["dev_root"])
    verb = argv[0] if argv else ""
    nqn = _option(argv, "-n") or ""

    if verb == "connect":
        response = _next_response(state, plan, "connect", nqn)
        appear = response.get("appear", {})
        delay = float(response.get("delay", 0.0))
        if appear is not None and delay > 0:
            if os.fork() == 0:  # the kernel finishing later, after nvme-cli returned
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                time.sleep(delay)
                _appear(sys_root, dev_root, nqn, appear)
                os._exit(0)
        elif appear is not None:
            _appear(sys_root, dev_root, nqn, appear)
        sys.stderr.write(response.get("stderr", ""))
        return int(response.get("rc", 0))

    if verb == "disconnect":
        response = _next_response(state, plan, "disconnect", nqn)
        rc = int(response.get("rc", 0))
        if rc == 0:
            count = fake_sysfs.remove_nqn(sys_root, dev_root, nqn)
            print(f"NQN:{nqn} disconnected {count} controller(s)")
        sys.stderr.write(response.get("stderr", ""))
        return rc

    if verb == "ns-rescan":
        return 0

    sys.stderr.write(f"nvme stand-in: unsupported command {argv!r}\n")
    return 22
