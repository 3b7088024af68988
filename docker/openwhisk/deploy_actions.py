"""Create the sample package and action on an OpenWhisk API host through its REST API
(``PUT /api/v1/namespaces/_/packages/{pkg}`` and ``.../actions/{pkg}/{action}``), waiting until
the host answers. Run by docker/compose.yaml's ``openwhisk-actions`` service; standard library.

Environment: OPENWHISK_APIHOST (http://openwhisk:3233), OPENWHISK_AUTH (uuid:key).
"""

import base64
import json
import os
import pathlib
import time
import urllib.error
import urllib.request

HOST = os.environ.get("OPENWHISK_APIHOST", "http://openwhisk:3233").rstrip("/")
AUTH = "Basic " + base64.b64encode(os.environ["OPENWHISK_AUTH"].encode()).decode()
CODE = (pathlib.Path(__file__).parent / "nexus_summary.py").read_text()


def put(path, body):
    request = urllib.request.Request(
        f"{HOST}/api/v1/namespaces/_/{path}?overwrite=true",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": AUTH, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


for _ in range(120):
    try:
        print("package", put("packages/reduction", {"publish": False}))
        break
    except (urllib.error.URLError, ConnectionError) as exc:
        print(f"waiting for {HOST}: {exc}")
        time.sleep(5)
else:
    raise SystemExit(f"{HOST} never answered")
print(
    "action",
    put(
        "actions/reduction/nexus-summary",
        {
            "exec": {"kind": "python:3", "code": CODE},
            "limits": {"timeout": 60000, "memory": 256},
        },
    ),
)
