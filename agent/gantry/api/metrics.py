"""``/metrics`` in the Prometheus text format: cAdvisor's ``container_*`` names per
container (so existing dashboards work), ``gantry_*`` for the agent itself. Built fresh
on each scrape from the engine's view, as Prometheus's exporter guide asks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from gantry import __version__
from gantry.engine.info import container_figures

if TYPE_CHECKING:
    from gantry.engine import Engine

__all__ = ["render_metrics"]

# (metric, type, help, figure key)
_CONTAINER_METRICS = (
    (
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds.",
        "start_time",
    ),
    (
        "container_last_seen",
        "gauge",
        "Last time a container was seen by the exporter.",
        "last_seen",
    ),
    (
        "container_processes",
        "gauge",
        "Number of processes running inside the container.",
        "processes",
    ),
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
        "cpu_seconds",
    ),
    (
        "container_memory_usage_bytes",
        "gauge",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        "memory_usage",
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
        "memory_working_set",
    ),
    (
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit for the container.",
        "memory_limit",
    ),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(labels)} {value:.17g}" for labels, value in samples]
    return lines


def render_metrics(engine: Engine, requests: Mapping[tuple[str, int], int], started: float) -> str:
    figures = container_figures(engine)
    lines: list[str] = []
    for name, kind, help_text, key in _CONTAINER_METRICS:
        samples = [
            ({"name": f["name"], "id": f["id"]}, float(f[key]))
            for f in figures
            if f.get(key) is not None
        ]
        if samples:
            lines += _family(name, kind, help_text, samples)
    counts: dict[str, int] = dict.fromkeys(
        ("created", "running", "paused", "stopped", "restarting"), 0
    )
    for summary in engine.list():
        counts[summary["status"]] += 1
    lines += _family(
        "gantry_build_info", "gauge", "Gantry agent version.", [({"version": __version__}, 1.0)]
    )
    lines += _family(
        "gantry_containers",
        "gauge",
        "Containers by status.",
        [({"status": k}, float(v)) for k, v in counts.items()],
    )
    lines += _family(
        "gantry_http_requests_total",
        "counter",
        "HTTP requests answered, by method and status code.",
        [
            ({"method": method, "code": str(code)}, float(n))
            for (method, code), n in sorted(requests.items())
        ],
    )
    lines += _family(
        "gantry_container_restarts_total",
        "counter",
        "Restarts done by restart policies.",
        [({}, float(engine.restarts_total))],
    )
    lines += _family(
        "gantry_events_total",
        "counter",
        "Events emitted since the agent started.",
        [({}, float(engine.events.count))],
    )
    lines += _family(
        "gantry_scrape_duration_seconds",
        "gauge",
        "Time this scrape took.",
        [({}, time.monotonic() - started)],
    )
    return "\n".join(lines) + "\n"
