"""OpenTelemetry tracing: exporter chosen in config, spans for requests, batches and jobs.

With `telemetry.tracing = "none"` (the default) no SDK provider is installed and every span
is the API's no-op, so instrumented code costs a few attribute look-ups. `console` writes
finished spans to stderr; `otlp` sends them over OTLP/HTTP to `telemetry.otlp_endpoint`.
Spans are exported in batches from a background thread, never on the request path.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult, TraceIdRatioBased

from arbitrage import __version__
from arbitrage.errors import ConfigError

P = ParamSpec("P")
R = TypeVar("R")

tracer = trace.get_tracer("arbitrage")
"""The service's tracer; a no-op until `configure_tracing` installs an exporter."""


class _SwitchableProcessor(SpanProcessor):
    """The one processor on the process's provider; reconfiguring swaps what it delegates to.

    OpenTelemetry allows one global provider per process, so a second `configure_tracing`
    (tests, a re-created app) replaces the exporter here instead of the provider.
    """

    def __init__(self) -> None:
        self.current: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.current is not None:
            self.current.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.current is not None:
            self.current.on_end(span)

    def shutdown(self) -> None:
        if self.current is not None:
            self.current.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.current.force_flush(timeout_millis) if self.current is not None else True


class _SwitchableSampler(Sampler):
    """Samples with the configured ratio while tracing is on, records nothing once it is off."""

    def __init__(self) -> None:
        self.current: Sampler = ALWAYS_OFF

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self.current.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Switchable({self.current.get_description()})"


_provider: TracerProvider | None = None
_switch = _SwitchableProcessor()
_sampler = _SwitchableSampler()
_enabled = False


def tracing_enabled() -> bool:
    """Whether spans are recorded and exported (hot paths skip optional span work otherwise)."""
    return _enabled


def configure_tracing(
    mode: str,
    *,
    otlp_endpoint: str = "",
    service_name: str = "arbitrage",
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
) -> None:
    """Choose where spans go: `none`, `console` (stderr) or `otlp`; `exporter` overrides (tests).

    Raises:
        ConfigError: an unknown mode, or `otlp` without the OTLP exporter package installed.
    """
    global _provider, _enabled
    if exporter is None:
        exporter = _exporter_for(mode, otlp_endpoint)
    if exporter is None:
        disable_tracing()
        return
    if _provider is None:
        _provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": __version__}),
            sampler=_sampler,
        )
        _provider.add_span_processor(_switch)
        trace.set_tracer_provider(_provider)
    _sampler.current = ParentBased(TraceIdRatioBased(min(max(sample_ratio, 0.0), 1.0)))
    previous, _switch.current = _switch.current, BatchSpanProcessor(exporter, schedule_delay_millis=1000)
    if previous is not None:
        previous.shutdown()
    _enabled = True


def disable_tracing() -> None:
    """Stop exporting; flushes what was recorded."""
    global _enabled
    _sampler.current = ALWAYS_OFF
    previous, _switch.current = _switch.current, None
    if previous is not None:
        previous.shutdown()
    _enabled = False


def flush_tracing(timeout_millis: int = 5_000) -> None:
    """Export what is buffered (at shutdown, and in tests before reading spans)."""
    _switch.force_flush(timeout_millis)


def _exporter_for(mode: str, endpoint: str) -> SpanExporter | None:
    if mode == "none":
        return None
    if mode == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if mode == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                "telemetry.tracing = otlp needs the opentelemetry-exporter-otlp-proto-http package"
            ) from exc
        return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()  # type: ignore[no-any-return]
    raise ConfigError(f"telemetry.tracing: expected none, console or otlp, got {mode!r}")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child span of whatever is current; attribute values must be bounded (no signatures)."""
    with tracer.start_as_current_span(name, attributes=attributes or None) as current:
        yield current


def traced(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate a coroutine function so each call is one span named `name`."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with tracer.start_as_current_span(name):
                return await function(*args, **kwargs)

        return wrapper

    return decorate


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current recording span as hex, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
