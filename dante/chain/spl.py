"""SPL Token transactions: build the ones Dante signs, read the transfers it verifies.

Written against solders alone (the instruction layouts are the SPL Token program's):
`transfer_checked` is instruction 12 (amount u64 LE, decimals u8; accounts source, mint,
destination, owner), the associated token account program's `CreateIdempotent` is 1, and a
memo is the memo program's instruction data as UTF-8.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from dante.schemas.chain import TokenTransfer

#: dGPU has 6 decimals: one base unit is one µdGPU.
DECIMALS: Final = 6

TOKEN_PROGRAM: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ATA_PROGRAM: Final = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAM: Final = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
SYSTEM_PROGRAM: Final = Pubkey.from_string("11111111111111111111111111111111")
SYSVAR_OWNER: Final = Pubkey.from_string("Sysvar1111111111111111111111111111111111111")
_TRANSFER_CHECKED: Final = 12
_MINT_TO_CHECKED: Final = 14
MINT_SIZE: Final = 82
#: A token account's layout: mint (32), owner (32), amount (u64 LE), …
TOKEN_ACCOUNT_SIZE: Final = 165


def pubkey(address: str) -> Pubkey:
    """The public key of a base58 address; ValueError when it is not one."""
    try:
        return Pubkey.from_string(address)
    except Exception as exc:
        raise ValueError(f"{address!r} is not a Solana address") from exc


def token_account(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The owner's associated token account for the mint."""
    found, _ = Pubkey.find_program_address(
        [bytes(owner), bytes(TOKEN_PROGRAM), bytes(mint)], ATA_PROGRAM
    )
    return found


def token_mint(data: bytes) -> str:
    """The mint in a token account's data."""
    return str(Pubkey.from_bytes(data[:32]))


def token_owner(data: bytes) -> str:
    """The owner in a token account's data."""
    return str(Pubkey.from_bytes(data[32:64]))


def token_amount(data: bytes) -> int:
    """The amount in a token account's data."""
    return int(struct.unpack_from("<Q", data, 64)[0])


def create_token_account(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    """Create the owner's associated token account unless it exists."""
    return Instruction(
        ATA_PROGRAM,
        bytes([1]),
        [
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(token_account(owner, mint), is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(SYSTEM_PROGRAM, is_signer=False, is_writable=False),
            AccountMeta(TOKEN_PROGRAM, is_signer=False, is_writable=False),
        ],
    )


def transfer_checked(
    owner: Pubkey, mint: Pubkey, to_owner: Pubkey, amount: int, decimals: int
) -> Instruction:
    """Move `amount` base units from the owner's token account to `to_owner`'s."""
    return Instruction(
        TOKEN_PROGRAM,
        struct.pack("<BQB", _TRANSFER_CHECKED, amount, decimals),
        [
            AccountMeta(token_account(owner, mint), is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(token_account(to_owner, mint), is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=True, is_writable=False),
        ],
    )


def mint_to_checked(
    authority: Pubkey, mint: Pubkey, to_owner: Pubkey, amount: int, decimals: int
) -> Instruction:
    return Instruction(
        TOKEN_PROGRAM,
        struct.pack("<BQB", _MINT_TO_CHECKED, amount, decimals),
        [
            AccountMeta(mint, is_signer=False, is_writable=True),
            AccountMeta(token_account(to_owner, mint), is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
        ],
    )


def memo(signer: Pubkey, text: str) -> Instruction:
    return Instruction(
        MEMO_PROGRAM, text.encode(), [AccountMeta(signer, is_signer=True, is_writable=False)]
    )


def signed(
    instructions: list[Instruction], payer: Keypair, blockhash: str, *others: Keypair
) -> VersionedTransaction:
    message = Message.new_with_blockhash(instructions, payer.pubkey(), Hash.from_string(blockhash))
    return VersionedTransaction(message, [payer, *others])


def deposit_transaction(
    payer: Keypair, *, mint: str, treasury: str, amount: int, note: str, blockhash: str
) -> VersionedTransaction:
    """A renter's deposit: transfer_checked to the treasury's token account, with its memo."""
    mint_key = pubkey(mint)
    return signed(
        [
            transfer_checked(payer.pubkey(), mint_key, pubkey(treasury), amount, DECIMALS),
            memo(payer.pubkey(), note),
        ],
        payer,
        blockhash,
    )


def payout_transaction(
    treasury: Keypair, *, mint: str, to_owner: str, amount: int, note: str, blockhash: str
) -> VersionedTransaction:
    """A payout: the recipient's token account made if missing, the transfer, its memo."""
    mint_key, to = pubkey(mint), pubkey(to_owner)
    return signed(
        [
            create_token_account(treasury.pubkey(), to, mint_key),
            transfer_checked(treasury.pubkey(), mint_key, to, amount, DECIMALS),
            memo(treasury.pubkey(), note),
        ],
        treasury,
        blockhash,
    )


def read_transfer(tx: VersionedTransaction, slot: int) -> TokenTransfer | None:
    """The transaction's one `transfer_checked` (with its memo), or None when it has none
    or several (Dante credits a transaction as a whole, so it must be unambiguous)."""
    message = tx.message
    keys = message.account_keys
    transfers: list[TokenTransfer] = []
    memos: list[str] = []
    signature = str(tx.signatures[0])
    for ix in message.instructions:
        program = keys[ix.program_id_index]
        data = bytes(ix.data)
        if program == MEMO_PROGRAM:
            memos.append(data.decode(errors="replace"))
        elif program == TOKEN_PROGRAM and data[:1] == bytes([_TRANSFER_CHECKED]):
            if len(data) != 10 or len(ix.accounts) < 4:
                return None
            _, amount, decimals = struct.unpack("<BQB", data)
            source, mint, destination, owner = (keys[i] for i in bytes(ix.accounts)[:4])
            transfers.append(
                TokenTransfer(
                    signature=signature,
                    slot=slot,
                    source_owner=str(owner),
                    source=str(source),
                    destination=str(destination),
                    mint=str(mint),
                    amount=amount,
                    decimals=decimals,
                )
            )
    if len(transfers) != 1:
        return None
    return msgspec.structs.replace(transfers[0], memo="\n".join(memos))
