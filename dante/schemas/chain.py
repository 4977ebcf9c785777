"""What the platform knows of the chain, as plain values: a confirmed SPL token transfer, a
transaction's status, the chain's identity. `dante/chain` produces them; the domain's rules
(`domain/payments.py`) judge them without any IO."""

from __future__ import annotations

import msgspec

#: A transaction signature in base58 (64 bytes: 87 or 88 characters).
SIGNATURE_PATTERN = r"^[1-9A-HJ-NP-Za-km-z]{64,90}$"
#: The memo a deposit carries: it names the account the transfer is for.
DEPOSIT_MEMO_PREFIX = "dante:deposit:"


def deposit_memo(account: str, nonce: str = "") -> str:
    """The memo a deposit carries: it names the account credited, and a nonce of its own
    (`:<nonce>`), so that two deposits of the same amount from one keypair within one
    blockhash are two transactions, not one signature twice."""
    return f"{DEPOSIT_MEMO_PREFIX}{account}" + (f":{nonce}" if nonce else "")


def memo_account(memo: str | None) -> str | None:
    """The account a deposit's memo names (None: it is no deposit memo)."""
    if memo is None or not memo.startswith(DEPOSIT_MEMO_PREFIX):
        return None
    return memo[len(DEPOSIT_MEMO_PREFIX) :].split(":", 1)[0]


def payout_memo(withdrawal_id: str) -> str:
    """The memo a payout carries: it names its withdrawal."""
    return f"dante:payout:{withdrawal_id}"


class TokenTransfer(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One confirmed SPL `transfer_checked`, read from the chain."""

    signature: str
    slot: int
    #: The wallet that signed the transfer (the source token account's owner).
    source_owner: str
    source: str
    #: The token account credited.
    destination: str
    mint: str
    amount: int
    decimals: int
    memo: str = ""
    #: The owner of the destination token account, as the chain holds it.
    destination_owner: str = ""


class SignatureStatus(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Where a sent transaction stands: landed (with its slot) or failed (with the error)."""

    slot: int
    confirmed: bool
    error: str | None = None


class SignedPayout(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A payout transaction, signed and not yet sent."""

    signature: str
    transaction: bytes
    #: The chain's block height after which this transaction can never land.
    last_valid_block_height: int


class ChainInfo(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The chain the platform settles on, as `dante chain status` shows it."""

    cluster: str
    local: bool
    mint: str
    decimals: int
    #: The treasury's owner, and its token account (where deposits go).
    treasury: str
    treasury_account: str
    treasury_balance_udgpu: int
    slot: int
    block_height: int
    #: A recent blockhash to sign a deposit with, and the last block height it is valid at.
    blockhash: str
    last_valid_block_height: int
    #: With `GetChain.address`: that wallet's dGPU and SOL.
    address: str | None = None
    address_balance_udgpu: int | None = None
    address_lamports: int | None = None


class FaucetResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    address: str
    signature: str
    funded_udgpu: int
    balance_udgpu: int
    lamports: int


class ChainAudit(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What the chain shows, for `dante audit --chain`: the treasury's balance and the
    transfers of the signatures asked about (those the chain does not know are left out)."""

    cluster: str
    mint: str
    treasury: str
    treasury_account: str
    treasury_balance_udgpu: int
    transfers: list[TokenTransfer] = msgspec.field(default_factory=list)
