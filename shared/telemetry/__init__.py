"""OpenTelemetry for scorefn: one schema of traces and metrics from router to scoring to
batch, a Prometheus scrape endpoint on the local host, and data collection.

* ``setup.setup_telemetry(TelemetrySettings(), role=...)`` once per process
  (``function_app``); off by default, and then free on the hot path.
* ``state.TELEMETRY``: the switches instrumented code checks (imports nothing heavy, so
  the pipeline may import it).
* ``instruments.Instruments``: every metric (README: Observability).
* ``tracing``: spans and W3C ``traceparent`` propagation; ``http``: request telemetry.
* ``collector.DataCollector``: sampled inputs and outputs to blob storage.
* ``cli``: ``scorefn stats <endpoint>``.
"""
