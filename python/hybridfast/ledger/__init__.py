"""The cost ledger. `open_ledger(config)` is what the pipeline calls; until the durable
ledger lands, records are kept in memory and no budget applies."""

from __future__ import annotations

from hybridfast.config import Config
from hybridfast.types import Caller, Deployment, LedgerRecord, Picodollars, Reservation


class MemoryLedger:
    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    async def reserve(
        self, caller: Caller, deployment: Deployment, request_id: str, worst_case: Picodollars
    ) -> Reservation:
        return Reservation(request_id=request_id, amount=worst_case)

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        self.records.append(record)

    async def release(self, reservation: Reservation) -> None:
        pass

    def remaining(self, caller: Caller) -> Picodollars | None:
        return None

    async def close(self) -> None:
        pass


async def open_ledger(config: Config) -> MemoryLedger:
    return MemoryLedger()
