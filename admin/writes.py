"""Create, update and stop: each publishes one instruction (key = campaign id, header ``author``) and
records it in the audit trail, within one PostgreSQL transaction that also serialises writes to the same
campaign (an advisory lock on its id), so a create cannot race another create, nor an update another
update. The publish happens inside the transaction: if Kafka fails, the transaction rolls back and nothing
is written anywhere (503); the audit row is written only with a real offset.
"""

from __future__ import annotations

from typing import Any

import msgspec

from admin import schema, store
from admin.body import convert
from admin.error import AdminError
from admin.keys import Principal
from admin.state import AdminState
from admin.store import Conn
from adplatform.instruction import (
    NEW,
    STOP,
    UPDATE,
    CampaignInstruction,
    encode_instruction,
    mapping_errors,
)

CREATE_FIELDS = frozenset(schema.FIELDS) - {"action"}
PATCH_FIELDS = CREATE_FIELDS - {"campaign_id"}
_ACTION_WORD = {NEW: "create", UPDATE: "update", STOP: "stop"}


def _validated(values: dict[str, Any]) -> CampaignInstruction:
    errors = mapping_errors(values)
    if errors:
        raise AdminError(422, "Invalid campaign.", errors=errors)
    return CampaignInstruction(**{name: values[name] for name in schema.FIELDS if name in values})


async def _lock(conn: Conn, campaign_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('adp-admin'), hashtext($1))", campaign_id)


async def _current(conn: Conn, campaign_id: str) -> tuple[CampaignInstruction, str] | None:
    """The campaign's newest known instruction and its status: the API's own write when it is the newest
    (not stored yet, or stored as is: its every field, optional ones included, comes back unchanged),
    else the stored row in the CSV's spelling (a CSV write came after)."""
    row = await store.campaign_row(conn, campaign_id)
    published = await store.last_published(conn, campaign_id)
    stored_version = row["version"] if row is not None else -1
    if published is not None and published.instruction is not None and published.version >= stored_version:
        status = "Inactive" if published.instruction.action == STOP else "Active"
        return published.instruction, status
    if row is None:
        return None
    campaign = store.campaign_of(row)
    return store.instruction_of(campaign, campaign.action), campaign.status


async def _publish(
    state: AdminState, conn: Conn, instr: CampaignInstruction, author: Principal
) -> schema.WriteResult:
    value = encode_instruction(instr)
    partition, offset = await state.publisher.publish(
        state.config.topics.instructions, value, key=instr.campaign_id.encode(),
        headers=[("author", author.name.encode())],
    )  # fmt: skip
    await store.insert_audit(
        conn, author=author.name, action=_ACTION_WORD[instr.action], campaign_id=instr.campaign_id,
        partition=partition, offset=offset, instruction=value,
    )  # fmt: skip
    return schema.WriteResult(
        campaign_id=instr.campaign_id, action=instr.action,  # type: ignore[arg-type]  # one of the three
        author=author.name, published=True, partition=partition, offset=offset, version=offset + 1,
        applied=False,
    )  # fmt: skip


async def create(state: AdminState, obj: dict[str, Any], author: Principal) -> schema.WriteResult:
    errors = {name: "unknown field" for name in obj if name not in CREATE_FIELDS}
    errors.update(mapping_errors({**obj, "action": NEW}))
    if errors:
        raise AdminError(422, "Invalid campaign.", errors=errors)
    instr = _validated({**obj, "action": NEW})
    convert(obj, schema.CampaignCreate)  # the schema's own gate, never stricter than the manager's
    async with state.pool.acquire() as conn, conn.transaction():
        await _lock(conn, instr.campaign_id)
        if await _current(conn, instr.campaign_id) is not None:
            raise AdminError(409, f"Campaign {instr.campaign_id} exists already; update it instead.")
        return await _publish(state, conn, instr, author)


async def update(
    state: AdminState, campaign_id: str, obj: dict[str, Any], author: Principal
) -> schema.WriteResult:
    errors = {name: "unknown field" for name in obj if name not in PATCH_FIELDS}
    if errors:
        raise AdminError(422, "Invalid campaign.", errors=errors)
    if not obj:
        raise AdminError(422, "Invalid campaign.", errors={"body": "nothing to update"})
    async with state.pool.acquire() as conn, conn.transaction():
        await _lock(conn, campaign_id)
        current = await _current(conn, campaign_id)
        if current is None:
            raise AdminError(404, f"No campaign {campaign_id}.")
        merged = {**msgspec.structs.asdict(current[0]), **obj, "action": UPDATE}
        instr = _validated(merged)
        return await _publish(state, conn, instr, author)


async def stop(state: AdminState, campaign_id: str, author: Principal) -> schema.WriteResult:
    async with state.pool.acquire() as conn, conn.transaction():
        await _lock(conn, campaign_id)
        current = await _current(conn, campaign_id)
        if current is None:
            raise AdminError(404, f"No campaign {campaign_id}.")
        instr, status = current
        if status == "Inactive":
            return schema.WriteResult(
                campaign_id=campaign_id, action="Stop Campaign", author=author.name, published=False,
                partition=None, offset=None, version=None, applied=True,
            )  # fmt: skip
        stopped = _validated({**msgspec.structs.asdict(instr), "action": STOP})
        return await _publish(state, conn, stopped, author)
