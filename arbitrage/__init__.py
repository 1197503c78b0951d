"""Capture Solana arbitrage transactions and turn them into ML-ready datasets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("arbitrage")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
