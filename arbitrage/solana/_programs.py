"""Program ids the decoder recognises, in one table, each with the source it was checked against.

Sources (read 2025-11 through the project's code search):
- [jup] jup-ag/instruction-parser `src/constants.ts` (`AMM_TYPES`, Jupiter's own AMM label table).
- [carbon] sevenlabs-hq/carbon `decoders/<name>-decoder/src/lib.rs` (`PROGRAM_ID` constants).
- [raysdk] @raydium-io/raydium-sdk-v2 `src/common/programId.ts` (`AMM_V4`, `CLMM_PROGRAM_ID`, ...).
- [meteora] Web3-Agora/substreams-solana `meteora/src/constant/constant.rs` (DAMM v2 id).
- [jito] `getTipAccounts` result, as listed in jito-labs/jito-docs `docs/source/lowlatencytxnsend.md`
  and QuickNode's getTipAccounts page.

`pool_index` is the position of the pool (or market) account in the swap instruction's account
list, from each program's IDL; `min_accounts` is the fewest accounts a swap instruction of that
program takes, so self-invocations that only log events (Phoenix, Anchor event CPIs) are not
mistaken for swaps.
"""

from __future__ import annotations

from typing import NamedTuple


class DexProgram(NamedTuple):
    """How to read a swap instruction of one DEX program."""

    name: str
    pool_index: int
    min_accounts: int


DEX_PROGRAMS: dict[str, DexProgram] = {
    # [raysdk] AMM_V4; swap_base_in/out: [token_program, amm, ...]
    "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8": DexProgram("raydium_amm", 1, 17),
    # [raysdk] CLMM_PROGRAM_ID; swap/swap_v2: [payer, amm_config, pool_state, ...]
    "CAMMCzo5YL8w4VFF8KVHrK22GGUsp5VTaW7grrKgrWqK": DexProgram("raydium_clmm", 2, 10),
    # [raysdk] CPMM; swap_base_input/output: [payer, authority, amm_config, pool_state, ...]
    "CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C": DexProgram("raydium_cpmm", 3, 13),
    # [jup] Whirlpool; swap: [token_program, token_authority, whirlpool, ...] (swap_v2: see WHIRLPOOL_V2)
    "whirLbMiicVdio4qvUfM5KAg6Ct8VwpYzGff3uctyCc": DexProgram("orca_whirlpool", 2, 11),
    # [jup] "Cropper Whirlpool", a Whirlpool fork with the same swap layout
    "H8W3ctz92svYg6mkn1UtGfu2aQr2fnUFHM1RhScEtQDt": DexProgram("cropper_whirlpool", 2, 11),
    # [carbon] meteora-dlmm-decoder; swap: [lb_pair, bin_array_bitmap_extension, ...]
    "LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo": DexProgram("meteora_dlmm", 0, 14),
    # [jup] "Meteora" (dynamic AMM, DAMM v1); swap: [pool, user_source, user_destination, ...]
    "Eo7WjKq67rjJQSZxS6z3YkapzY3eMj6Xy8X5EQVn5UaB": DexProgram("meteora_damm", 0, 15),
    # [meteora] METEORA_DAMM_V2_PROGRAM_ID; swap: [pool_authority, pool, ...]
    "cpamdpZCGKUy5JxQXB4dcpGPiikHawvSWAd6mEn1sGG": DexProgram("meteora_damm_v2", 1, 12),
    # [jup] Phoenix; swap: [phoenix_program, log_authority, market, trader, ...]
    "PhoeNiXZ8ByJGLkxNfZRnkUfjvmuYqLR89jjFHGqdXY": DexProgram("phoenix", 2, 9),
    # [jup][raysdk] OpenBook (Serum v3 fork); new_order_v3 / settle_funds: [market, ...]
    "srmqPvymJeFKQ4zGQed1GFppgkRHL9kaELCbyksJtPX": DexProgram("openbook", 0, 9),
    # [jup] Openbook v2; place_take_order: [signer, penalty_payer, market, ...]
    "opnb2LAfJYbRMAHHvqjCwQxanZn7ReEHp1k81EohpZb": DexProgram("openbook_v2", 2, 12),
    # [jup][carbon] Lifinity v2; swap: [authority, amm, user_transfer_authority, ...]
    "2wT8Yq49kHgDzXuPxZSaeLaH1qbmGXtEyPy64bL7aD3c": DexProgram("lifinity", 1, 13),
    # [jup] Lifinity v1, same swap layout
    "EewxydAPCCVuNEyrVN68PuSYdQ7wKn27V9Gjeoi8dy3S": DexProgram("lifinity_v1", 1, 13),
    # [jup][carbon] FluxBeam (token-swap fork); swap: [swap, authority, user_transfer_authority, ...]
    "FLUXubRmkEi2q6K3Y9kBPg9248ggaZVsoSFhtJHSrm1X": DexProgram("fluxbeam", 0, 10),
    # [jup] Jupiter Perps; swap / add/remove liquidity: [owner, ..., perpetuals, pool, ...]
    "PERPHjGBqRHArX4DySjwM6UJHiR3sWAatqfdBS2qQJu": DexProgram("jupiter_perps", 5, 10),
}

# Whirlpool-layout programs whose swap_v2 (more accounts) puts the pool at index 4:
# [token_program_a, token_program_b, memo_program, token_authority, whirlpool, ...].
WHIRLPOOL_V2_MIN_ACCOUNTS = 15
WHIRLPOOL_V2_POOL_INDEX = 4
WHIRLPOOL_PROGRAMS = frozenset(
    {
        "whirLbMiicVdio4qvUfM5KAg6Ct8VwpYzGff3uctyCc",
        "H8W3ctz92svYg6mkn1UtGfu2aQr2fnUFHM1RhScEtQDt",
    }
)

# [jup] JUPITER_V6_PROGRAM_ID. Its route instructions CPI into the DEXes above and emit one
# Anchor `SwapEvent` (self-CPI) per hop, which carries the hop's exact mints and amounts.
JUPITER_V6 = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"

# SPL Token and Token-2022 (solana-program-library `token/program` and `token/program-2022`).
TOKEN_PROGRAMS = frozenset(
    {
        "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",
    }
)
VOTE_PROGRAM = "Vote111111111111111111111111111111111111111"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"

# [jito] the eight Jito tip accounts returned by `getTipAccounts`.
JITO_TIP_ACCOUNTS = frozenset(
    {
        "96gYZGLnJYVFmbjzopPSU6QiEV5fGqZNyN9nmNhvrZU5",
        "HFqU5x63VTqvQss8hp11i4wVV8bD44PvwucfZ2bU7gRe",
        "Cw8CFyM9FkoMi7K7Crf6HNQqf4uEMzpKw6QNghXLvLkY",
        "ADaUMid9yfUytqMBgopwjb2DTLSokTSzL1zt6iGPaS49",
        "DfXygSm4jCyNCybVYYK6DwvWqjKee8pbDmJGcLWNDXjh",
        "ADuUkR4vqLUMWXxW9gh6D6L8pMSawimctcNZ5pGwDcEt",
        "DttWaMuVvTiduZRnguLF7jNxTgiMBZ1hyAumKUiL2KRL",
        "3AVi9Tg9Uo68tJfuvoKvqKNWKkC5wPdSSdeBnizKZ6jT",
    }
)

# Programs whose presence makes a transaction worth decoding; anything else is "unrelated".
SWAP_PROGRAMS = frozenset(DEX_PROGRAMS) | {JUPITER_V6}

# Solana's base fee per signature and default compute-unit limit per instruction
# (solana-sdk `fee_calculator` / compute-budget defaults), used to derive the priority fee.
LAMPORTS_PER_SIGNATURE = 5000
DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT = 200_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000
