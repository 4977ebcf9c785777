"""The chain's queries: its status (and what a client needs to sign a deposit), an address's
balances, and on the local chain the faucet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dante.chain import DECIMALS, ChainError
from dante.domain.rejection import Rejected
from dante.schemas import commands as cmd
from dante.schemas.chain import ChainAudit, ChainInfo, FaucetResult
from dante.schemas.money import MAX_UDGPU

if TYPE_CHECKING:
    from dante.chain import Chain
    from dante.services.commands import Lookup

#: The most the faucet hands out at once: 1,000,000 dGPU.
FAUCET_LIMIT = 1_000_000 * 1_000_000


class ChainQueries:
    """An extension of the command service (`GetChain`, `Faucet`)."""

    handles: frozenset[type[cmd.Command[Any]]] = frozenset(
        {cmd.GetChain, cmd.Faucet, cmd.AuditChain}
    )

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    async def answer(
        self,
        role: str,  # noqa: ARG002 (anyone may read the chain)
        identity: str,  # noqa: ARG002
        command: Any,
        lookup: Lookup,  # noqa: ARG002
    ) -> Any:
        try:
            if isinstance(command, cmd.Faucet):
                return await self._faucet(command)
            if isinstance(command, cmd.AuditChain):
                return await self._audit(command)
            return await self._info(command)
        except ChainError as exc:
            raise Rejected("unavailable", f"the chain cannot be reached: {exc}") from None

    async def _info(self, command: cmd.GetChain) -> ChainInfo:
        chain = self.chain
        blockhash, last_valid = await chain.latest_blockhash()
        extra: dict[str, Any] = {}
        if command.address is not None:
            extra = {
                "address": command.address,
                "address_balance_udgpu": await chain.token_balance(command.address),
                "address_lamports": await chain.sol_balance(command.address),
            }
        return ChainInfo(
            cluster=chain.cluster,
            local=chain.local,
            mint=chain.mint,
            decimals=DECIMALS,
            treasury=chain.treasury,
            treasury_account=chain.treasury_account,
            treasury_balance_udgpu=await chain.token_balance(chain.treasury),
            slot=await chain.slot(),
            block_height=await chain.block_height(),
            blockhash=blockhash,
            last_valid_block_height=last_valid,
            **extra,
        )

    async def _audit(self, command: cmd.AuditChain) -> ChainAudit:
        chain = self.chain
        found = [await chain.transfer(signature) for signature in command.signatures]
        return ChainAudit(
            cluster=chain.cluster,
            mint=chain.mint,
            treasury=chain.treasury,
            treasury_account=chain.treasury_account,
            treasury_balance_udgpu=await chain.token_balance(chain.treasury),
            transfers=[t for t in found if t is not None],
        )

    async def _faucet(self, command: cmd.Faucet) -> FaucetResult:
        chain = self.chain
        if not chain.local:
            raise Rejected(
                "forbidden",
                f"the faucet gives test dGPU on the local chain only; this platform settles on "
                f"{chain.cluster}, where dGPU is bought, not minted",
            )
        if command.amount > FAUCET_LIMIT:
            raise Rejected("invalid", "the faucet gives at most 1000000 dGPU at a time", "amount")
        balance = await chain.token_balance(command.address)
        if balance + command.amount > MAX_UDGPU:
            raise Rejected("invalid", "that address holds enough test dGPU already", "amount")
        signature = await chain.faucet(command.address, command.amount)
        return FaucetResult(
            address=command.address,
            signature=signature,
            funded_udgpu=command.amount,
            balance_udgpu=await chain.token_balance(command.address),
            lamports=await chain.sol_balance(command.address),
        )
