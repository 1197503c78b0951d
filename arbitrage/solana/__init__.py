"""Raw Solana transactions -> arbitrage records: swaps, route, verdict, profit and costs.

Pure functions of their input (no I/O): feed `getTransaction` / `getBlock` results as dicts, or
raw JSON / NDJSON bytes, and get one `SolanaDecoded` per transaction. See docs/solana.md.
"""

from arbitrage.solana._decode import (
    SolanaDecoded,
    decode_block,
    decode_documents,
    decode_transaction,
)
from arbitrage.solana._programs import DEX_PROGRAMS, JITO_TIP_ACCOUNTS

__all__ = [
    "DEX_PROGRAMS",
    "JITO_TIP_ACCOUNTS",
    "SolanaDecoded",
    "decode_block",
    "decode_documents",
    "decode_transaction",
]
