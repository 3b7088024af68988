"""Authorization cost in-process (issue #3): µs per event for authorize() and for authorize()
plus minting the delegated macaroons, with 10 and 10,000 datasets and 1 and 10 entitled tenants
per event. Pure code, no broker: the live-broker throughput is bench/ingest.py's ``worker``
variant.

    .venv/bin/python -m bench.authorize [--events N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.events import CanonicalEvent
from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant

SOURCE = "dcache://bench"


def build_index(datasets: int, tenants_per_event: int) -> PolicyIndex:
    index = PolicyIndex()
    sharers = [f"partner-{n}" for n in range(tenants_per_event - 1)]
    for n in range(datasets):
        index.put_dataset(
            parse_dataset(
                {
                    "id": f"ds-{n}",
                    "owner": f"owner-{n % 100}",
                    "source": SOURCE,
                    "prefixes": [f"/data/facility-{n % 7}/beamtime-{n}"],
                    "output": f"/data/facility-{n % 7}/beamtime-{n}/processed",
                    "shared_with": sharers,
                }
            )
        )
    for owner in range(100):
        subs = [
            {"dataset": f"ds-{n}", "paths": ["raw/**"], "write": True}
            for n in range(owner, datasets, 100)
        ]
        index.put_tenant(parse_tenant({"tenant": f"owner-{owner}", "subscriptions": subs}))
    for partner in sharers:
        subs = [
            {"dataset": f"ds-{n}", "types": ["storage.object.created"]} for n in range(datasets)
        ]
        index.put_tenant(parse_tenant({"tenant": partner, "subscriptions": subs}))
    return index


def events(count: int, datasets: int) -> list[CanonicalEvent]:
    out: list[CanonicalEvent] = []
    for n in range(count):
        ds = (n * 7919) % datasets
        path = f"/data/facility-{ds % 7}/beamtime-{ds}/raw/run-{n % 13}/scan_{n:06d}.nxs"
        out.append(
            {
                "specversion": "1.0",
                "id": f"{n:032x}",
                "source": SOURCE,
                "type": "storage.object.created",
                "subject": path,
                "time": "2026-11-26T00:00:00.000Z",
                "datacontenttype": "application/json",
                "data": {"path": path, "size": 1000, "storage": "dcache"},
            }
        )
    return out


def measure(datasets: int, tenants: int, count: int, issuer: TokenIssuer) -> tuple[float, float]:
    index = build_index(datasets, tenants)
    batch = events(count, datasets)
    now = datetime.now(UTC)
    decide, mint = [], []
    for _ in range(3):
        started = time.perf_counter()
        decisions = [authorize(event, index) for event in batch]
        decide.append((time.perf_counter() - started) / count * 1e6)
        assert all(len(d.deliveries) == tenants for d in decisions), "fixture broken"
        started = time.perf_counter()
        for event, decision in zip(batch, decisions, strict=True):
            issuer.issue_event(decision.deliveries, event, now)  # as the agent does
        mint.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(decide), statistics.median(mint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    import tempfile  # noqa: PLC0415 - only the benchmark needs a scratch secret
    from pathlib import Path  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "macaroon-root.key").write_bytes(b"bench-root-key")
        issuer = TokenIssuer(SecretFiles(Path(scratch)), "bench", "bench", "", 3600)
        print("| datasets | entitled tenants per event | authorize µs/event | + mint µs/event |")
        print("|---:|---:|---:|---:|")
        for datasets in (10, 10_000):
            for tenants in (1, 10):
                decide, mint = measure(datasets, tenants, args.events, issuer)
                print(f"| {datasets:,} | {tenants} | {decide:.1f} | {decide + mint:.1f} |")


if __name__ == "__main__":
    main()
