"""A sample OpenWhisk action (Python 3): summarise one new file and write the summary back.

streamapp invokes it with ``{"event": ..., "read": {"url", "path", "token"}, "write": {"url",
"path", "token"}, "streamapp": {...}, ...params}``. It reads the file with the read token (a
dCache macaroon, sent as a bearer token), and writes ``<write.url>/<name>.summary.json`` with
the write token. Standard library only, so it runs on the stock ``python:3`` runtime. A result
holding ``error`` marks the activation failed (streamapp records it, and retries it if the
trigger's ``retry_failed`` says so).
"""

import hashlib
import json
import posixpath
import urllib.error
import urllib.request

CHUNK = 1 << 20


def main(params):
    read, write = params.get("read") or {}, params.get("write") or {}
    if not read.get("url") or not read.get("token"):
        return {"error": "no read URL or token (does the trigger set storage_url?)"}
    digest, size = hashlib.sha256(), 0
    request = urllib.request.Request(read["url"], headers=_bearer(read["token"]))
    try:
        with urllib.request.urlopen(request, timeout=50) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except urllib.error.URLError as exc:
        return {"error": f"cannot read {read['path']}: {exc}"}
    summary = {
        "path": read["path"],
        "size": size,
        "sha256": digest.hexdigest(),
        "event": params.get("event", {}).get("id"),
        "detector": params.get("detector"),
    }
    result = {"summary": summary}
    if write.get("url") and write.get("token"):
        name = posixpath.basename(read["path"]) + ".summary.json"
        target = write["url"].rstrip("/") + "/" + name
        body = json.dumps(summary).encode()
        put = urllib.request.Request(
            target,
            data=body,
            method="PUT",
            headers={**_bearer(write["token"]), "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(put, timeout=50) as response:
                result["written"] = {"url": target, "status": response.status}
        except urllib.error.URLError as exc:
            return {"error": f"cannot write {target}: {exc}"}
    return result


def _bearer(token):
    return {"Authorization": "Bearer " + token}
