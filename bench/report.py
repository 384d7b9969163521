"""Turning observations into figures: percentiles, histogram quantiles, deltas, the machine, a plot.

Quantiles of the controller's histograms are read as Prometheus' ``histogram_quantile`` does:
linear within the bucket the rank falls in. Figures from the benchmark's own watch are exact.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Samples = Mapping[str, list[tuple[dict[str, str], float]]]

WRITE_VERBS = ("create", "patch", "update", "delete")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def p50_p99(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, q in (("p50", 0.5), ("p99", 0.99)):
        v = percentile(values, q)
        out[key] = None if v is None else round(v * scale, digits)
    return out


def histogram(samples: Samples, name: str, match: Mapping[str, str]) -> list[tuple[float, float]]:
    """Cumulative buckets ``(le, count)`` of one histogram series, ascending."""
    buckets = []
    for labels, value in samples.get(f"{name}_bucket", []):
        if all(labels.get(k) == v for k, v in match.items()):
            buckets.append((float(labels["le"]), value))
    return sorted(buckets)


def bucket_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # beyond the last finite bucket: its bound is all we know
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def hist_p50_p99(buckets: list[tuple[float, float]], scale: float = 1.0) -> dict[str, Any]:
    out: dict[str, Any] = {"count": int(buckets[-1][1]) if buckets else 0}
    for key, q in (("p50", 0.5), ("p99", 0.99)):
        v = histogram_quantile(buckets, q)
        out[key] = None if v is None else round(v * scale, 2)
    return out


def ratio(p99: float | None, calls_p99: list[float | None]) -> float | None:
    """``p99`` over the sum of ``calls_p99`` (None when any is unknown or they sum to 0)."""
    if p99 is None or any(c is None for c in calls_p99):
        return None
    total = sum(c for c in calls_p99 if c is not None)
    return round(p99 / total, 2) if total > 0 else None


def counter_total(samples: Samples, name: str, match: Mapping[str, str] | None = None) -> float:
    return sum(
        value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in (match or {}).items())
    )


def api_calls(samples: Samples) -> dict[str, float]:
    """API calls by ``verb/resource/code``, from ``dpctl_api_request_duration_seconds_count``."""
    out: dict[str, float] = {}
    for labels, value in samples.get("dpctl_api_request_duration_seconds_count", []):
        key = f"{labels.get('verb')}/{labels.get('resource')}/{labels.get('code')}"
        out[key] = out.get(key, 0.0) + value
    return out


FMA_PATHS = ("cold", "warm", "hot")


def work(samples: Samples) -> dict[str, float]:
    """The controller's work so far: Pod watch events applied, reconciles done, HTTP calls to Pods."""
    return {
        "pod_events": counter_total(samples, "informer_events_total", {"informer": "pods"}),
        "reconciles": counter_total(samples, "workqueue_work_duration_seconds_count", {"name": "dualpods"}),
        "http_calls": counter_total(samples, "dpctl_http_request_duration_seconds_count"),
        # The launcher path's actuations by the controller's own path (fma_actuation_seconds).
        **{
            f"fma_actuations_{path}": counter_total(samples, "fma_actuation_seconds_count", {"path": path})
            for path in FMA_PATHS
        },
    }


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def writes(calls: Mapping[str, float], resources: Iterable[str] | None = None) -> float:
    wanted = set(resources) if resources is not None else None
    total = 0.0
    for key, value in calls.items():
        verb, resource, _code = [*key.split("/"), "", ""][:3]
        if verb in WRITE_VERBS and (wanted is None or resource in wanted):
            total += value
    return total


def conflicts(calls: Mapping[str, float]) -> float:
    """Writes that lost a race: 409 (a precondition, a name taken) and 422 (a JSON patch whose
    ``test`` failed; no write of the benchmark is invalid otherwise)."""
    total = 0.0
    for key, value in calls.items():
        verb, _resource, code = [*key.split("/"), "", ""][:3]
        if verb in WRITE_VERBS and code in ("409", "422"):
            total += value
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (raises OSError when it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def plot(cold: Sequence[float], hot: Sequence[float], path: Path, title: str) -> None:
    """Cold and hot actuation latencies: histograms and empirical CDFs side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    top = max([*cold, *hot, 1.0])
    bins = [top * i / 60 for i in range(61)]
    for values, label, color in (
        (cold, "cold (new runner)", "tab:blue"),
        (hot, "hot (woken sleeper)", "tab:orange"),
    ):
        if not values:
            continue
        left.hist(values, bins=bins, alpha=0.6, label=f"{label}, n={len(values)}", color=color)
        ordered = sorted(values)
        right.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label, color=color)
    left.set_xlabel("requester created → Ready (s)")
    left.set_ylabel("requesters")
    left.legend()
    right.set_xlabel("requester created → Ready (s)")
    right.set_ylabel("fraction of actuations")
    right.grid(alpha=0.3)
    right.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """A table of the summaries of one or more results, with the targets beside them."""
    head = "| figure | target | " + " | ".join(
        f"{r['summary']['requesters']} req. / {r['summary']['nodes']}x{r['summary']['gpus_per_node']}"
        for r in results
    )
    lines = [head + " |", "|---|---|" + "---|" * len(results)]
    rows = [
        ("controller-added, create p50 / p99 (ms)", "added_latency_ms.create", "p99 ≤ 100"),
        ("controller-added, wake p50 / p99 (ms)", "added_latency_ms.wake", "p99 ≤ 100"),
        ("controller-added, relay p50 / p99 (ms)", "added_latency_ms.relay", "p99 ≤ 100"),
        ("actuation cold p50 / p99 (s)", "actuation_s.cold", ""),
        ("actuation hot p50 / p99 (s)", "actuation_s.hot", ""),
        ("… from the stub running, cold p50 / p99 (s)", "actuation_from_stub_running_s.cold", ""),
        ("… from the stub running, hot p50 / p99 (s)", "actuation_from_stub_running_s.hot", ""),
    ]
    for label, path, target in rows:
        cells = []
        for r in results:
            v = _get(r["summary"], path)
            cells.append(f"{v['p50']} / {v['p99']}" if isinstance(v, Mapping) else "–")
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    singles = [
        ("API writes per cold actuation, Pods + Events (Pods)", "cold", "≤ 4"),
        ("API writes per hot actuation, Pods + Events (Pods)", "hot", "≤ 3"),
    ]
    for label, path, target in singles:
        cells = [
            f"{_get(r['summary'], 'api_writes_per_actuation.' + path)} "
            f"({_get(r['summary'], 'api_pod_writes_per_actuation.' + path)})"
            for r in results
        ]
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    for label, path, target in (
        ("controller CPU per actuation (ms)", "cpu_ms_per_actuation", "≤ 5"),
        ("controller peak RSS (MB)", "peak_rss_mb", "≤ 250"),
        ("restart with 10,000 Pods: start → caches synced (s)", "sync_s_10k", "≤ 5"),
    ):
        cells = [str(_get(r["summary"], path)) for r in results]
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    cells = [str(_get(r, "restart.cpu_s_to_synced")) for r in results]
    lines.append("| … of which the controller's CPU (s) | | " + " | ".join(cells) + " |")
    cells = [f"{_get(r['summary'], 'violations')} / {_get(r['summary'], 'readiness_flaps')}" for r in results]
    lines.append("| GPU ledger violations / readiness flaps | 0 / 0 | " + " | ".join(cells) + " |")
    cells = [
        f"{r['summary']['load_avg']['start'][0]} → {r['summary']['load_avg']['end'][0]}" for r in results
    ]
    lines.append("| machine load average (1 min), start → end | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report RESULT.json ...``: the Markdown table of docs/benchmarks.md."""
    import json
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    print(markdown([json.loads(Path(p).read_text()) for p in paths]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
