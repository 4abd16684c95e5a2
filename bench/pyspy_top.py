"""Summarise py-spy's collapsed stacks (`py-spy record --format raw`, bench/peers.py --profile):
the frames that take the most samples themselves (self), and the functions most samples pass
through (inclusive), as shares of all samples. Idle samples (the event loop waiting in
select/epoll) are counted and left out of the shares, so the shares are of the busy time.

    .venv/bin/python bench/pyspy_top.py bench/.profiles/*.txt [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

IDLE = re.compile(r"\b(select|poll|_run_once) \((selectors|asyncio/base_events)\.py")


def frame_name(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (module.py)`: lines apart, one entry."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if "site-packages" in parts or "bridge" in parts else parts[-1]
    return f"{function} ({short})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    own: collections.Counter[str] = collections.Counter()
    through: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for path in args.files:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            if IDLE.search(frames[-1]) or "select (selectors.py" in frames[-1]:
                idle += count
                continue
            busy += count
            own[frame_name(frames[-1])] += count
            for name in {frame_name(frame) for frame in frames}:
                through[name] += count
    total = busy or 1
    print(f"{busy + idle} samples, {busy} busy ({100 * busy / max(1, busy + idle):.0f}%), {len(args.files)} file(s)")
    for title, counter in (("self", own), ("inclusive", through)):
        print(f"\n{title} (% of busy samples)")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / total:6.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
