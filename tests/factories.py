"""Factories of realistic raw storage records (shapes from docs/formats.md §1, §3), and of the
canonical events normalize makes of them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from streamapp.domain.events import CanonicalEvent


def dcache_transfer(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "version": "1.0",
        "msgType": "transfer",
        "date": "2026-05-04T10:18:30.123+02:00",
        "queuingTime": 0,
        "cellName": "pool_write",
        "cellType": "pool",
        "cellDomain": "poolDomain",
        "status": {"code": 0, "msg": ""},
        "session": "door:WebDAV-door@webdavDomain:AAX6FqLTdag",
        "subject": ["UidPrincipal[1000]", "UserNamePrincipal[alice]", "Origin[198.51.100.7]"],
        "pnfsid": "0000C9CFA47686574B43B1EF9CF037A24780",
        "billingPath": "/data/alice/run42/file.root",
        "fileSize": 100709673,
        "storageInfo": "alice:default@osm",
        "transferSize": 100709673,
        "transferTime": 1067,
        "isWrite": "write",
        "protocolInfo": {
            "protocol": "Http",
            "versionMajor": 1,
            "versionMinor": 1,
            "transferTag": "",
            "port": 41166,
            "host": "198.51.100.7",
        },
        "initiator": "door:WebDAV-door@webdavDomain:AAX6FqLTdag",
        "isP2p": False,
        "transferPath": "/data/alice/run42/file.root",
    }
    record.update(overrides)
    return record


def dcache_record(msg_type: str, **overrides: Any) -> dict[str, Any]:
    """A remove/store/restore/request/hit record with the fields dCache's serializers add."""
    record: dict[str, Any] = {
        "version": "1.0",
        "msgType": msg_type,
        "date": "2026-05-04T11:00:00.000+02:00",
        "queuingTime": 0,
        "cellName": "PnfsManager",
        "cellType": "PnfsManager",
        "cellDomain": "namespaceDomain",
        "status": {"code": 0, "msg": ""},
        "session": "pool:pool1@poolDomain:AAY",
        "subject": ["UidPrincipal[0]"],
        "pnfsid": "0000ABCDEF",
        "billingPath": "/data/alice/run42/file.root",
        "fileSize": 4096,
        "storageInfo": "alice:default@osm",
    }
    if msg_type in ("store", "restore"):
        record["hsm"] = {"type": "osm", "instance": "tape", "provider": "enstore"}
        record["locations"] = ["osm://tape/?store=x"]
        record["transferTime"] = 5000
    if msg_type == "remove":
        record["transaction"] = "door:Nfs@nfsDomain:1"
    if msg_type == "request":
        del record["version"]
        record["VERSION"] = "1.0"
        record.update(
            sessionDuration=1200,
            transferPath="/upload/5/abc/file.root",
            client="198.51.100.7",
            clientChain="198.51.100.7",
            mappedUID=1000,
            mappedGID=1000,
            owner="alice",
        )
    if msg_type == "hit":
        del record["fileSize"]
        record.update(filesize=4096, protocol="Http", cached=True)
    record.update(overrides)
    return record


def s3_record(
    event_name: str = "ObjectCreated:Put",
    *,
    bucket: str = "beamtime-11012345",
    key: str = "raw/scan+1/frame_000.tif",
    size: Any = 2048,
    event_source: str = "aws:s3",
    **overrides: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "key": key,
        "eTag": "0123456789abcdef0123456789abcdef",
        "sequencer": "0055AED6DCD90281E5",
    }
    if size is not None:
        obj["size"] = size
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": event_source,
        "awsRegion": "eu-central-1",
        "eventTime": "2026-11-20T13:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.20"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "testConfigRule",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }
    record.update(overrides)
    return record


def s3_notification(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records) or [s3_record()]}


def minio_wrapped(record: dict[str, Any]) -> dict[str, Any]:
    name = record["eventName"]
    key = f"{record['s3']['bucket']['name']}/{unquote_plus(record['s3']['object']['key'])}"
    return {"EventName": name, "Key": key, "Records": [record]}


def raw(record: Any) -> bytes:
    return json.dumps(record).encode()


def created_event(source: str, subject: str, storage: str, time: str) -> CanonicalEvent:
    """A canonical ``storage.object.created`` event of one byte at ``subject``."""
    return {
        "specversion": "1.0",
        "id": "e",
        "source": source,
        "type": "storage.object.created",
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
        "data": {"path": subject, "size": 1, "storage": storage},
    }
