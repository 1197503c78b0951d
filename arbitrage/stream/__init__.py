"""Live fan-out of stored transactions and their JSON rendering."""

from arbitrage.stream._recent import LiveEvent, RecentTransactions
from arbitrage.stream._render import json_array, render_transactions

__all__ = ["LiveEvent", "RecentTransactions", "json_array", "render_transactions"]
