"""A deterministic mix of realistic raw storage records for the ingest benchmark.

Shapes come from ``tests.factories`` (docs/formats.md §1, §3); this module only varies
them: ~89 % dCache billing records (transfers, requests, removals, tape, cache hits, pool-to-pool,
some failures), ~10 % S3 notifications (AWS, Ceph, MinIO-wrapped, a few with two records) and
~1 % malformed or unrecognized records that must be dead-lettered.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import orjson

from tests import factories

USERS: Final = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
PROTOCOLS: Final = ("Http", "Xrootd", "NFS4", "GFtp")
S3_EVENTS: Final = (
    ("ObjectCreated:Put", 55),
    ("ObjectCreated:CompleteMultipartUpload", 10),
    ("ObjectRemoved:Delete", 15),
    ("ObjectAccessed:Get", 10),
    ("ObjectCreated:PutTagging", 5),  # skipped: metadata only
    ("ObjectRestore:Completed", 5),
)
DCACHE_KINDS: Final = (
    ("write", 34),
    ("read", 30),
    ("request", 10),  # skipped: door request record
    ("remove", 8),
    ("store", 4),
    ("restore", 3),
    ("hit", 5),  # skipped: cache hit
    ("p2p", 3),  # skipped: pool-to-pool
    ("failed", 3),  # transfer with a non-zero status
)
_CEST: Final = timezone(timedelta(hours=2))


def generate(count: int, seed: int = 2) -> list[bytes]:
    """``count`` raw record values (Kafka message values), the same for the same seed."""
    rng = random.Random(seed)
    start = datetime(2026, 5, 4, 8, 0, 0, tzinfo=_CEST)
    s3_names = [name for name, _ in S3_EVENTS]
    s3_weights = [weight for _, weight in S3_EVENTS]
    dcache_kinds = [kind for kind, _ in DCACHE_KINDS]
    dcache_weights = [weight for _, weight in DCACHE_KINDS]
    values: list[bytes] = []
    for index in range(count):
        when = start + timedelta(milliseconds=7 * index + rng.randrange(7))
        draw = rng.random()
        if draw < 0.01:
            values.append(_malformed(rng, index, when))
        elif draw < 0.11:
            names = rng.choices(s3_names, s3_weights, k=2 if rng.random() < 0.1 else 1)
            values.append(_s3(rng, index, when, names))
        else:
            kind = rng.choices(dcache_kinds, dcache_weights)[0]
            values.append(_dumps(_dcache(rng, index, when, kind)))
    return values


def _dumps(record: Any) -> bytes:
    return orjson.dumps(record)


def _dcache_date(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def _path(rng: random.Random, index: int) -> tuple[str, str]:
    user = rng.choice(USERS)
    # Reads and removals name earlier files; writes name new ones.
    number = rng.randrange(max(index, 1))
    return user, f"/data/{user}/run{number % 211:03d}/file_{number:07d}.root"


def _pnfsid(rng: random.Random) -> str:
    return f"0000{rng.getrandbits(128):032X}"


def _dcache(rng: random.Random, index: int, when: datetime, kind: str) -> dict[str, Any]:
    user, path = _path(rng, index)
    size = rng.randrange(1, 4_000_000_000)
    common: dict[str, Any] = {
        "date": _dcache_date(when),
        "pnfsid": _pnfsid(rng),
        "billingPath": path,
        "fileSize": size,
        "storageInfo": f"{user}:default@osm",
        "subject": [
            f"UidPrincipal[{1000 + USERS.index(user)}]",
            f"UserNamePrincipal[{user}]",
            f"Origin[198.51.100.{rng.randrange(1, 255)}]",
        ],
    }
    if kind in ("write", "read", "p2p", "failed"):
        protocol = rng.choice(PROTOCOLS)
        record = factories.dcache_transfer(
            **common,
            isWrite="read" if kind == "read" else "write",
            isP2p=kind == "p2p",
            transferSize=size,
            transferTime=rng.randrange(10, 100_000),
            transferPath=path,
            protocolInfo={
                "protocol": protocol,
                "versionMajor": 1,
                "versionMinor": 1,
                "transferTag": "",
                "port": rng.randrange(20_000, 60_000),
                "host": f"198.51.100.{rng.randrange(1, 255)}",
            },
        )
        if kind == "failed":
            record["status"] = {"code": 10006, "msg": "Transfer interrupted: client disconnected"}
        return record
    return factories.dcache_record(kind, **common)


def _s3(rng: random.Random, index: int, when: datetime, names: list[str]) -> bytes:
    flavour = rng.random()
    bucket = f"beamtime-1101{rng.randrange(40):04d}"
    event_time = when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    records = []
    for offset, name in enumerate(names):
        key = f"raw/scan+{rng.randrange(500)}/frame_{index:07d}_{offset}.tif"
        if flavour < 0.15:  # MinIO writes "s3:" prefixed names and its own eventSource
            record = factories.s3_record(
                f"s3:{name}", bucket=bucket, key=key, event_source="minio:s3"
            )
        elif flavour < 0.35:  # Ceph RGW documents the size as a string
            record = factories.s3_record(
                name,
                bucket=bucket,
                key=key,
                size=str(rng.randrange(1, 10**9)),
                event_source="ceph:s3",
            )
        else:
            record = factories.s3_record(name, bucket=bucket, key=key, size=rng.randrange(1, 10**9))
        record["eventTime"] = event_time
        records.append(record)
    if flavour < 0.15 and len(records) == 1:
        return _dumps(factories.minio_wrapped(records[0]))
    return _dumps(factories.s3_notification(*records))


def _malformed(rng: random.Random, index: int, when: datetime) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return _dumps(factories.dcache_transfer(date=_dcache_date(when)))[:-17]  # truncated
    if choice == 1:
        return b"[1, 2, 3]"
    if choice == 2:
        return b"\xff\xfe not json"
    if choice == 3:
        return _dumps(factories.dcache_record("frobnicate", date=_dcache_date(when)))
    if choice == 4:
        return _dumps(
            factories.dcache_record("remove", date=_dcache_date(when), billingPath="parent:00AB")
        )
    if choice == 5:
        record = factories.dcache_transfer(date=_dcache_date(when))
        del record["status"]
        return _dumps(record)
    if choice == 6:
        return _dumps(factories.s3_notification(factories.s3_record("Nonsense:Thing")))
    return _dumps({"hello": "world", "n": index})
