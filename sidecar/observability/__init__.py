"""What the sidecar tells its operators (logs, traces, metrics) and the masking behind them.

Public API:

- :mod:`.logs` - ``configure``: JSON lines on stderr, no tracebacks, noisy libraries held back.
- :mod:`.masking` - ``mask_id``, ``mask_name``, ``mask_phone``, ``mask_token``, ``scrub``: the one
  place that masks personal data for display and logs.
- :mod:`.telemetry` - ``Telemetry``, ``build``, ``extract_parent``: tracer and meter
  providers, W3C trace context.
- :mod:`.telemetry_export` - ``build``: the ``[telemetry]`` exporters (OTLP, Prometheus), from
  its config section (``sidecar.config.TelemetryConfig``).
- :mod:`.instruments` - the request-path instruments (``RPC_SERVER_DURATION``,
  ``PLATFORM_DURATION`` ...) and ``duration``/``elapsed_seconds`` (names, units and buckets per
  the OpenTelemetry semantic conventions: docs/metrics.md).

Everything here may be imported by any layer (the platform client records its metrics here);
nothing here imports another sidecar package but ``sidecar.config`` (the ``[telemetry]``
section's model).
"""

__all__ = ["instruments", "logs", "masking", "telemetry", "telemetry_export"]
