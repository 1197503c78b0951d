"""HTTP controllers: thin skins that parse, authorise, call a service and answer."""

from arbitrage.api._deps import DEPENDENCIES
from arbitrage.api._errors import EXCEPTION_HANDLERS
from arbitrage.api._parameters import before_request
from arbitrage.api.admin import AdminController
from arbitrage.api.admin_kafka import DeadLetterController, KafkaAdminController
from arbitrage.api.exports import ExportController
from arbitrage.api.features import FeatureController
from arbitrage.api.health import HealthController
from arbitrage.api.ingest import IngestController
from arbitrage.api.schedules import ScheduleController
from arbitrage.api.stats import StatsController
from arbitrage.api.stream import StreamController
from arbitrage.api.transactions import TransactionController

CONTROLLERS = [
    AdminController,
    DeadLetterController,
    ExportController,
    KafkaAdminController,
    ScheduleController,
    FeatureController,
    HealthController,
    IngestController,
    StatsController,
    TransactionController,
]
CONTROLLERS.append(StreamController)

__all__ = ["CONTROLLERS", "DEPENDENCIES", "EXCEPTION_HANDLERS", "before_request"]
