"""Where dGPU settles, for `dante up` and `dante serve`: the local chain, or a Solana cluster
(README, "Real dGPU on Solana")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from dante.cli.options import UsageError

if TYPE_CHECKING:
    from dante.chain import Chain


@Parameter(name="*", group="Settlement")
@dataclass(frozen=True, slots=True)
class ChainOptions:
    solana_rpc: Annotated[
        str | None,
        Parameter(
            env_var="DANTE_SOLANA_RPC",
            help="Settle on this Solana cluster (its JSON-RPC URL: devnet, mainnet-beta) "
            "instead of the local chain; needs --mint and --treasury-keypair.",
        ),
    ] = None
    mint: Annotated[str | None, Parameter(help="The dGPU mint on --solana-rpc.")] = None
    treasury_keypair: Annotated[
        Path | None,
        Parameter(help="The treasury's keypair on --solana-rpc (it pays withdrawals)."),
    ] = None

    def for_parts(self, parts: tuple[str, ...]) -> Chain | None:
        """`cluster` for `dante serve` running `parts` (none: all): only the commands
        verify deposits and pay withdrawals, so only they take a cluster."""
        if self.solana_rpc is not None and parts and "commands" not in parts:
            raise UsageError(
                "--solana-rpc is for the commands part (it verifies deposits and pays withdrawals)"
            )
        return self.cluster()

    def cluster(self, *, rpc_port: int | None = None) -> Chain | None:
        """The cluster to settle on, or None for the local chain (`rpc_port`: `dante up`'s
        --chain-rpc-port, which serves the local chain)."""
        if self.solana_rpc is None:
            if self.mint is not None or self.treasury_keypair is not None:
                raise UsageError("--mint and --treasury-keypair go with --solana-rpc")
            return None
        if rpc_port is not None:
            raise UsageError(
                "--chain-rpc-port serves the local chain; with --solana-rpc there is none"
            )
        if self.mint is None or self.treasury_keypair is None:
            raise UsageError("--solana-rpc needs --mint (the dGPU mint) and --treasury-keypair")
        from dante.chain.keys import read_keypair
        from dante.chain.rpc import RpcChain

        try:
            return RpcChain(
                self.solana_rpc, mint=self.mint, treasury=read_keypair(self.treasury_keypair)
            )
        except ValueError as exc:
            raise UsageError(f"--mint: {exc}") from None
