"""A sidecar process that records its telemetry in memory and prints it when it stops.

``python -m tests.integration.recording_sidecar CONFIG`` builds the sidecar from CONFIG exactly as
``yibao-sidecar serve`` does, but with the SDK's in-memory span exporter and metric reader; it
serves until its stdin closes, closes the sidecar (signing out), then prints one JSON document:
every finished span and every metric point. It runs as its own process, as the sidecar does in
production, so the HSM module reads this process's SOFTHSM2_CONF (a module is initialised once
per process).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar import app, config
from sidecar.observability import telemetry

REPO = Path(__file__).resolve().parents[2]


def start(config_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """The process; close its stdin (``communicate``) to stop it and read the JSON."""
    argv = [sys.executable, "-m", "tests.integration.recording_sidecar", str(config_path)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(argv, **pipes, text=True, env={**os.environ, **env}, cwd=REPO)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "parent_remote": bool(parent and parent.is_remote),
        "attributes": dict(span.attributes or {}),
        "ok": span.status.is_ok,
        "status": span.status.description or "",
        "events": [[event.name, dict(event.attributes or {})] for event in span.events],
    }


def metric_records(reader: InMemoryMetricReader) -> dict[str, list[dict[str, Any]]]:
    points: dict[str, list[dict[str, Any]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    count = getattr(point, "count", None)
                    row = {"attributes": dict(point.attributes or {}), "value": value}
                    points.setdefault(metric.name, []).append({**row, "count": count})
    return points


async def main(config_path: Path) -> None:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    observability = telemetry.build(exporter, readers=(reader,), synchronous=True)
    sidecar = app.build(config.load(config_path), observability)
    await sidecar.prepare()
    await sidecar.server.start()
    print("serving", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await sidecar.server.stop()
    points = metric_records(reader)
    await sidecar.close()
    spans = [span_record(span) for span in exporter.get_finished_spans()]
    print(json.dumps({"spans": spans, "metrics": points}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
