"""Where a worker's time goes: a py-spy profile summarised by code area (``bench --profile``)."""

from __future__ import annotations

from pathlib import Path

#: Code areas a worker's profile is summarised by (first match of a frame's file path).
PROFILE_AREAS = (
    ("onnxruntime", "inference (ONNX Runtime)"),
    ("stream/model/scorer.py", "input encoding and decoding"),
    ("stream/state/context.py", "context update"),
    ("stream/contracts/records.py", "event parsing and list encoding"),
    ("faust/tables", "Faust table and changelog"),
    ("aiokafka", "Kafka client (aiokafka)"),
    ("faust/", "Faust streams and topics"),
    ("mode/", "mode services"),
    ("asyncio", "asyncio event loop"),
)
#: Innermost frames of threads that wait rather than work (py-spy does not always tell).
WAITING = ("EpollSelector.select (selectors.py", "_worker (concurrent/futures/thread.py:81)")


def profile_summary(path: Path, top: int = 15) -> dict:
    """Share of a worker's samples per code area and the busiest functions (self time).

    ``path`` holds py-spy's raw output: one ``frame;frame;...;frame count`` line per stack,
    each frame ``function (file:line)``, innermost last. Stacks waiting in the event loop's
    ``select`` or in an idle executor thread (:data:`WAITING`) are counted apart; the area
    and function shares are of the remaining (busy) samples. A stack counts towards the
    first area (in :data:`PROFILE_AREAS` order) any of its frames belongs to.
    """
    areas: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(WAITING):
            waiting += count
            continue
        total += count
        area = next((name for key, name in PROFILE_AREAS if any(key in f for f in frames)), "other")
        areas[area] = areas.get(area, 0) + count
        functions[frames[-1]] = functions.get(frames[-1], 0) + count
    share = {k: round(v / total, 4) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])}
    busiest = sorted(functions.items(), key=lambda kv: -kv[1])[:top]
    return {
        "busy_samples": total,
        "waiting_samples": waiting,
        "area_share": share,
        "top_self": [{"frame": f, "share": round(n / total, 4)} for f, n in busiest],
    }
