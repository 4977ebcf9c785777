"""A minimal Solana JSON-RPC endpoint over the local chain, like solana-test-validator's.

It answers the methods `RpcChain` uses, shaped as a cluster answers them (solders parses
them with the same types it parses a cluster's answers with): `getSlot`, `getBlockHeight`,
`getLatestBlockhash`, `getBalance`, `getTokenAccountBalance`, `getSignatureStatuses`,
`getTransaction` (base64), `sendTransaction` (base64). HTTP/1.1 with keep-alive, on
localhost; one request at a time per connection, as JSON-RPC clients send them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import TYPE_CHECKING, Any, Final

import structlog

from dante.chain import ChainError, spl

if TYPE_CHECKING:
    from dante.chain.local import LocalChain

log = structlog.get_logger(__name__)

_METHOD_NOT_FOUND: Final = -32601
_INVALID_PARAMS: Final = -32602
_PREFLIGHT_FAILED: Final = -32002


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class RpcServer:
    def __init__(self, chain: LocalChain, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.chain = chain
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("chain.rpc_ready", url=self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def serve(self) -> None:
        """Serve until cancelled (starting first unless `start` was awaited)."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ── HTTP ────────────────────────────────────────────────────────────────────────────

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = json.dumps(await self._answer(body)).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(self, body: bytes) -> Any:
        try:
            request = json.loads(body)
        except ValueError:
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "Parse error"},
            }
        if isinstance(request, list):
            return [await self._one(r) for r in request]
        return await self._one(request)

    async def _one(self, request: dict[str, Any]) -> dict[str, Any]:
        ident = request.get("id")
        error: dict[str, Any]
        method = getattr(self, f"_rpc_{request.get('method')}", None)
        if method is None:
            error = {"code": _METHOD_NOT_FOUND, "message": "Method not found"}
            return {"jsonrpc": "2.0", "id": ident, "error": error}
        try:
            result = await method(*request.get("params", []))
        except RpcError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            return {"jsonrpc": "2.0", "id": ident, "error": error}
        except (TypeError, ValueError) as exc:
            return {
                "jsonrpc": "2.0",
                "id": ident,
                "error": {"code": _INVALID_PARAMS, "message": f"Invalid params: {exc}"},
            }
        return {"jsonrpc": "2.0", "id": ident, "result": result}

    async def _context(self) -> dict[str, int]:
        return {"slot": await self.chain.slot()}

    # ── methods ─────────────────────────────────────────────────────────────────────────

    async def _rpc_getSlot(self, *_: Any) -> int:  # noqa: N802 (the RPC's names)
        return await self.chain.slot()

    async def _rpc_getBlockHeight(self, *_: Any) -> int:  # noqa: N802
        return await self.chain.block_height()

    async def _rpc_getLatestBlockhash(self, *_: Any) -> dict[str, Any]:  # noqa: N802
        blockhash, last_valid = await self.chain.latest_blockhash()
        value = {"blockhash": blockhash, "lastValidBlockHeight": last_valid}
        return {"context": await self._context(), "value": value}

    async def _rpc_getBalance(self, address: str, *_: Any) -> dict[str, Any]:  # noqa: N802
        return {"context": await self._context(), "value": await self.chain.sol_balance(address)}

    async def _rpc_getTokenAccountBalance(self, address: str, *_: Any) -> dict[str, Any]:  # noqa: N802
        account = self.chain.account(address)
        if account is None or account.owner != spl.TOKEN_PROGRAM:
            raise RpcError(_INVALID_PARAMS, "Invalid param: could not find account")
        return {
            "context": await self._context(),
            "value": _ui_amount(spl.token_amount(bytes(account.data))),
        }

    async def _rpc_getSignatureStatuses(  # noqa: N802
        self, signatures: list[str], *_: Any
    ) -> dict[str, Any]:
        value = []
        for signature in signatures:
            status = await self.chain.signature_status(signature)
            value.append(
                None
                if status is None
                else {
                    "slot": status.slot,
                    "confirmations": None,
                    "err": None,
                    "status": {"Ok": None},
                    "confirmationStatus": "finalized",
                }
            )
        return {"context": await self._context(), "value": value}

    async def _rpc_getTransaction(self, signature: str, *_: Any) -> dict[str, Any] | None:  # noqa: N802
        found = self.chain.record(signature)
        if found is None:
            return None
        slot, raw = found
        from solders.transaction import VersionedTransaction

        tx = VersionedTransaction.from_bytes(raw)
        balances = []
        for index, key in enumerate(tx.message.account_keys):
            account = self.chain.account(str(key))
            if (
                account is not None
                and account.owner == spl.TOKEN_PROGRAM
                and len(account.data) == spl.TOKEN_ACCOUNT_SIZE
            ):
                data = bytes(account.data)
                balances.append(
                    {
                        "accountIndex": index,
                        "mint": spl.token_mint(data),
                        "owner": spl.token_owner(data),
                        "programId": str(spl.TOKEN_PROGRAM),
                        "uiTokenAmount": _ui_amount(spl.token_amount(data)),
                    }
                )
        keys = len(tx.message.account_keys)
        meta: dict[str, Any] = {
            "err": None,
            "status": {"Ok": None},
            "fee": 5000,
            "preBalances": [0] * keys,
            "postBalances": [0] * keys,
            "innerInstructions": [],
            "logMessages": [],
            "preTokenBalances": [],
            "postTokenBalances": balances,
            "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "computeUnitsConsumed": 0,
        }
        return {
            "slot": slot,
            "blockTime": None,
            "meta": meta,
            "transaction": [base64.b64encode(raw).decode(), "base64"],
            "version": 0,
        }

    async def _rpc_sendTransaction(self, encoded: str, config: dict[str, Any] | None = None) -> str:  # noqa: N802
        encoding = (config or {}).get("encoding", "base58")
        if encoding != "base64":
            raise RpcError(_INVALID_PARAMS, f"unsupported encoding: {encoding} (use base64)")
        try:
            return await self.chain.send(base64.b64decode(encoded))
        except ChainError as exc:
            text = str(exc)
            err: Any
            if "Blockhash not found" in text:
                err = "BlockhashNotFound"
            elif "insufficient funds" in text:
                err = {"InstructionError": [0, {"Custom": 1}]}
            else:
                err = {"InstructionError": [0, "InvalidAccountData"]}
            raise RpcError(
                _PREFLIGHT_FAILED,
                f"Transaction simulation failed: {exc}",
                {
                    "err": err,
                    "logs": [str(exc)],
                    "accounts": None,
                    "unitsConsumed": 0,
                    "returnData": None,
                    "innerInstructions": None,
                },
            ) from None


def _ui_amount(amount: int) -> dict[str, Any]:
    whole, part = divmod(amount, 10**spl.DECIMALS)
    text = f"{whole}.{part:06d}".rstrip("0").rstrip(".")
    return {
        "amount": str(amount),
        "decimals": spl.DECIMALS,
        "uiAmount": amount / 10**spl.DECIMALS,
        "uiAmountString": text,
    }
