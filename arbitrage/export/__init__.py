"""Dataset exports: format writers, staged sinks, manifests and background jobs.

Public face:
- `ExportService` runs jobs (`submit`, `get`, `list`, `cancel`, `wait`, `download`); a
  cancel reaches a job that another process on the same ClickHouse runs. Schedules also use
  `has_scheduled_job` and `record_unstarted` to find and record a run a crash lost.
- `ExportRequest` is the request body; `ExportJob` what a job looks like.
- `register_exporter(name, writer)` adds a format (or use the `arbitrage.exporters`
  entry-point group); `Exporter` is the protocol a writer follows; `formats()` lists them.
- `run_export`/`plan_export` run one export directly (the CLI uses them).
"""

from arbitrage.export._cli import add_export_arguments, export_command
from arbitrage.export._jobs import (
    ACTIVE_STATES,
    INTERRUPTED_ERROR,
    Download,
    ExportJob,
    ExportService,
    JobNotDownloadable,
    JobNotFound,
    JobState,
)
from arbitrage.export._manifest import ColumnDescription, FileInfo, column_descriptions
from arbitrage.export._request import ExportRequest, Split
from arbitrage.export._run import (
    ExportCancelled,
    ExportPlan,
    ExportProgress,
    ExportResult,
    plan_export,
    run_export,
    table_columns,
)
from arbitrage.export._settings import storage_options_from
from arbitrage.export._sink import Destination, redact_url
from arbitrage.export._writers import (
    ENTRY_POINT_GROUP,
    Exporter,
    UnknownFormat,
    WriterOptions,
    formats,
    register_exporter,
)

__all__ = [
    "ACTIVE_STATES",
    "ENTRY_POINT_GROUP",
    "INTERRUPTED_ERROR",
    "ColumnDescription",
    "Destination",
    "Download",
    "ExportCancelled",
    "ExportJob",
    "ExportPlan",
    "ExportProgress",
    "ExportRequest",
    "ExportResult",
    "ExportService",
    "Exporter",
    "FileInfo",
    "JobNotDownloadable",
    "JobNotFound",
    "JobState",
    "Split",
    "UnknownFormat",
    "WriterOptions",
    "add_export_arguments",
    "column_descriptions",
    "export_command",
    "formats",
    "plan_export",
    "redact_url",
    "register_exporter",
    "run_export",
    "storage_options_from",
    "table_columns",
]
