"""`/admin/spend`, `/admin/budgets` and `hybridfast ledger ...` over a gateway that served
real (fake-upstream) traffic into a SQLite ledger."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hybridfast._core import PICODOLLARS_PER_USD, format_usd
from hybridfast.cli import main
from hybridfast.config import parse_config
from hybridfast.server.app import create_app, opening_key
from tests.conftest import fake_config
from tests.fakes.upstream import FakeUpstream

MASTER = "sk-admin-ledger-test"
USD = PICODOLLARS_PER_USD


def _config_text(fake: FakeUpstream, tmp_path: Path) -> str:
    text = fake_config(
        fake,
        server=f"  master_key: {MASTER}",
        extra=(
            "keys:\n"
            "  - {key: sk-alice, name: alice, user: alice, team: research}\n"
            "  - {key: sk-bob, name: bob, team: ops}\n"
            "budgets:\n"
            "  - {scope: team, name: research, window: month, limit_usd: 5}\n"
        ),
    )
    return text.replace(
        "ledger:\n  backend: memory\n", f"ledger:\n  backend: sqlite\n  path: {tmp_path}/l.db\n"
    )


async def _chat(client: Any, key: str, i: int) -> str:
    body = {"model": "chat", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 20}
    resp = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    assert resp.status == 200, await resp.text()
    await resp.read()
    return str(resp.headers["x-hybridfast-cost-usd"])


async def test_admin_spend_budgets_and_the_cli(
    aiohttp_client: Any,
    fake_openai: FakeUpstream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _config_text(fake_openai, tmp_path)
    (tmp_path / "hybridfast.yaml").write_text(text)
    client = await aiohttp_client(create_app(parse_config(text).config))
    await client.app[opening_key]
    admin = {"authorization": f"Bearer {MASTER}"}

    alice = [await _chat(client, "sk-alice", i) for i in range(3)]
    bob = [await _chat(client, "sk-bob", 10 + i) for i in range(2)]
    alice_usd = sum(Decimal(c) for c in alice)
    bob_usd = sum(Decimal(c) for c in bob)
    assert alice_usd > 0

    by_team = await _check_spend(client, admin, alice_usd, bob_usd)

    await _change_budgets(client, admin, alice_usd)
    await client.close()  # the gateway closes its ledger

    # The CLI reads the same store with the same config.
    _check_cli(tmp_path, capsys, by_team, alice_usd + bob_usd)


async def _check_spend(
    client: Any, admin: dict[str, str], alice_usd: Decimal, bob_usd: Decimal
) -> dict[str, Decimal]:
    """`/admin/spend` by team, day and model; returns the spend by team."""
    # Only the master key reaches the admin API.
    resp = await client.get("/admin/spend", headers={"authorization": "Bearer sk-alice"})
    assert resp.status == 403

    resp = await client.get("/admin/spend?by=team", headers=admin)
    assert resp.status == 200
    spend = await resp.json()
    by_team = {r["group"]: Decimal(r["cost_usd"]) for r in spend["rows"]}
    # The ledger's sums are exactly the costs the client was told, request by request.
    assert by_team == {"research": alice_usd, "ops": bob_usd}
    resp = await client.get("/admin/spend?by=day&since=24h", headers=admin)
    (day,) = (await resp.json())["rows"]
    assert Decimal(day["cost_usd"]) == alice_usd + bob_usd
    assert day["requests"] == 5
    resp = await client.get("/admin/spend?by=model&format=csv", headers=admin)
    (row,) = list(csv.DictReader(io.StringIO(await resp.text())))
    assert (row["group"], row["requests"]) == ("chat", "5")
    resp = await client.get("/admin/spend?by=colour", headers=admin)
    assert resp.status == 400
    assert "ERR_INVALID_REQUEST" in await resp.text()
    resp = await client.get("/admin/spend?since=yesterday-ish", headers=admin)
    assert resp.status == 400
    return by_team


async def _change_budgets(client: Any, admin: dict[str, str], alice_usd: Decimal) -> None:
    """`/admin/budgets`: read, an all-or-nothing change, the refusal it causes, a delete."""
    resp = await client.get("/admin/budgets", headers=admin)
    (research,) = (await resp.json())["budgets"]
    assert research["limit_usd"] == "5"
    assert Decimal(research["spent_usd"]) == alice_usd
    assert research["reserved_usd"] == "0"

    # A bad item changes nothing, even when others in the list are good.
    bad = [{"scope": "global", "limit_usd": 1}, {"scope": "team", "limit_usd": 1}]
    resp = await client.put("/admin/budgets", json=bad, headers=admin)
    assert resp.status == 400
    resp = await client.put(
        "/admin/budgets",
        json=[
            {"scope": "team", "name": "research", "window": "month", "limit_usd": "0.000001"},
            {"scope": "key", "name": "bob", "window": "day", "limit_usd": 7},
        ],
        headers=admin,
    )
    assert resp.status == 200
    labels = {(b["scope"], b["name"]): b["limit_usd"] for b in (await resp.json())["budgets"]}
    assert labels == {("team", "research"): "0.000001", ("key", "bob"): "7"}
    # Alice's team is now over its budget: refused with the stable code and what is left.
    body = {"model": "chat", "messages": [{"role": "user", "content": "more"}], "max_tokens": 20}
    resp = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-alice"}
    )
    assert resp.status == 429
    error = await resp.json()
    assert error["error"]["code"] == "ERR_BUDGET_EXCEEDED"
    # (The router, which sees what is left, refuses before the ledger's hold would.)
    assert "$0 left" in error["error"]["message"]
    resp = await client.delete("/admin/budgets?scope=key&name=bob&window=day", headers=admin)
    assert resp.status == 200
    resp = await client.delete("/admin/budgets?scope=key&name=bob&window=day", headers=admin)
    assert resp.status == 404


def _check_cli(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    by_team: dict[str, Decimal],
    total_usd: Decimal,
) -> None:
    """`ledger report|export|budgets` on the store the server wrote."""
    cfg = str(tmp_path / "hybridfast.yaml")
    assert main(["ledger", "--config", cfg, "report", "--by", "team", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["group"]: Decimal(r["cost_usd"]) for r in rows} == by_team
    assert main(["ledger", "report", "--by", "model", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "chat          5" in out
    assert f"total: ${format_usd(int((total_usd) * USD))}" in out

    assert main(["ledger", "--config", cfg, "export"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Five answers, and the refusal: on the books at no cost, with the status the client got.
    assert len({e["request_id"] for e in entries}) == len(entries) == 6
    (refused,) = [e for e in entries if e["status"] == 429]
    assert (refused["key_name"], Decimal(refused["cost_usd"])) == ("alice", 0)
    assert {e["key_name"] for e in entries} == {"alice", "bob"}
    assert sum(Decimal(e["cost_usd"]) for e in entries) == total_usd
    csv_path = str(tmp_path / "x.csv")
    assert main(["ledger", "--config", cfg, "export", "--format", "csv", "-o", csv_path]) == 0
    exported = (tmp_path / "x.csv").read_text()
    assert len(list(csv.DictReader(io.StringIO(exported)))) == 6

    # Budgets changed through the API were kept: the CLI sees the new research limit.
    assert main(["ledger", "--config", cfg, "budgets", "--json"]) == 0
    (research,) = json.loads(capsys.readouterr().out)
    assert research["limit_usd"] == "0.000001"
    assert research["remaining_usd"] == "0"


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"ledger: {{path: {tmp_path}/missing.db}}\n")
    assert main(["ledger", "--config", str(cfg), "report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error ERR_CONFIG: no ledger at")
    assert main(["ledger", "--config", str(cfg), "report", "--since", "last tuesday"]) == 2
    assert "ERR_INVALID_REQUEST" in capsys.readouterr().err
    # Budgets still list (nothing spent) when nothing was stored yet.
    cfg.write_text(
        f"ledger: {{path: {tmp_path}/missing.db}}\n"
        "budgets: [{scope: global, window: day, limit_usd: 2.5}]\n"
    )
    assert main(["ledger", "--config", str(cfg), "budgets"]) == 0
    assert "global/day  spent $0 of $2.5, $2.5 left" in capsys.readouterr().out
