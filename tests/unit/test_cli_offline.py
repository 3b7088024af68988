"""The offline operator commands, run as the real console script (no broker needed):
``normalize``, ``authorize --tables`` and ``token inspect|verify``.

Every invocation is started once, concurrently, by a module fixture (each costs an interpreter
and faust's import); the tests then judge the recorded exit codes and output.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamapp.delegation import strip_trailing_newline
from streamapp.domain.token_minting import Grant, mint_with_root_key
from tests.factories import dcache_record, dcache_transfer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".venv" / "bin" / "streamapp"
DCACHE = "dcache://dcache.desy.example"
KEY = b"cli-root-key"
EXPIRES = datetime(2026, 11, 20, 8, 10, tzinfo=UTC)
FILE = "/data/petra3/p06/2026/11012346/raw/scan_00001.nxs"
TOKEN = mint_with_root_key(
    Grant(FILE, ("DOWNLOAD", "READ_METADATA"), EXPIRES),
    key=KEY,
    identifier="cli-test",
    location="dcache.desy.example",
).token
P02_BEAMTIME = "/data/petra3/p02.1/2026/11012345/"
P06_BEAMTIME = "/data/petra3/p06/2026/11012346/"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def only(self) -> dict[str, Any]:
        lines = self.json_lines()
        assert len(lines) == 1, self
        return lines[0]


def run(*args: str, stdin: str = "") -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAPP_")}
    done = subprocess.run(
        [str(SCRIPT), *args],
        input=stdin.encode(),
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


STDIN_RECORDS = "\n".join(
    [
        "",
        json.dumps(dcache_transfer()),
        "",
        "   ",
        "not json",
        json.dumps(dcache_record("hit")),
        json.dumps(dcache_transfer(billingPath="/../etc/passwd")),
        "",
    ]
)


def jobs(secrets: Path) -> dict[str, Callable[[], Result]]:
    key_file = secrets / "root.key"
    key_file.write_bytes(KEY + b"\n")
    wrong_file = secrets / "wrong.key"
    wrong_file.write_bytes(b"another-key\n")
    fresh = mint_with_root_key(
        Grant(FILE, ("DOWNLOAD",), datetime.now(UTC) + timedelta(hours=1)),
        key=KEY,
        identifier="cli-test",
        location="dcache.desy.example",
    ).token

    def verify(*extra: str, token: str = TOKEN, key: Path = key_file, stdin: str = "") -> Result:
        return run("token", "verify", token, "--secret-file", str(key), *extra, stdin=stdin)

    def at(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    bad_tables = secrets / "bad-tables"
    (bad_tables / "datasets").mkdir(parents=True)
    (bad_tables / "datasets" / "x.toml").write_text('id = "y"\nowner = "o"\n')

    download = ("--path", FILE, "--activity", "DOWNLOAD")
    return {
        "normalize-stdin": lambda: run(
            "normalize", "--source", "dcache://dcache.example.org", "-", stdin=STDIN_RECORDS
        ),
        "normalize-missing-file": lambda: run("normalize", "no/such/file.jsonl"),
        "normalize-sample": lambda: run(
            "normalize", "--source", DCACHE, "samples/dcache-billing.jsonl"
        ),
        "authorize-bad-tables": lambda: run("authorize", "--tables", str(bad_tables)),
        "inspect": lambda: run("token", "inspect", TOKEN),
        "inspect-garbage": lambda: run("token", "inspect", "garbage"),
        "verify-ok": lambda: verify(*download, "--at", "2026-11-20T08:05:00Z"),
        "verify-ok-stdin": lambda: verify(
            *download, "--at", "2026-11-20T08:05:00Z", token="-", stdin=TOKEN + "\n"
        ),
        "verify-ok-now": lambda: verify(*download, token=fresh),
        "verify-sibling": lambda: verify(
            "--path",
            FILE.replace("00001", "00002"),
            "--activity",
            "DOWNLOAD",
            "--at",
            "2026-11-20T08:05:00Z",
        ),
        "verify-upload": lambda: verify(
            "--path", FILE, "--activity", "UPLOAD", "--at", "2026-11-20T08:05:00Z"
        ),
        "verify-expired": lambda: verify(
            *download, "--at", at(EXPIRES + timedelta(milliseconds=1))
        ),
        "verify-wrong-key": lambda: verify(
            *download, "--at", "2026-11-20T08:05:00Z", key=wrong_file
        ),
        "verify-no-secret": lambda: run("token", "verify", TOKEN, *download),
        "verify-unreadable-secret": lambda: verify(*download, key=secrets / "missing.key"),
        "verify-bad-at": lambda: verify(*download, "--at", "next tuesday"),
    }


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    todo = jobs(tmp_path_factory.mktemp("secrets"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(job) for name, job in todo.items()}

        def authorize_sample() -> Result:  # fed with the normalize command's own output
            normalized = futures["normalize-sample"].result()
            assert normalized.code == 0, normalized
            return run("authorize", "--tables", "tables", stdin=normalized.stdout)

        futures["authorize-sample"] = pool.submit(authorize_sample)
        yield {name: future.result() for name, future in futures.items()}


# --- normalize -------------------------------------------------------------------------------


def test_normalize_reads_stdin_and_numbers_lines_skipping_blanks(cli: dict[str, Result]) -> None:
    result = cli["normalize-stdin"]
    assert result.code == 0, result.stderr
    lines = result.json_lines()
    assert [line["line"] for line in lines] == [2, 5, 6, 7]
    assert lines[0]["event"]["subject"] == "/data/alice/run42/file.root"
    assert lines[0]["event"]["source"] == "dcache://dcache.example.org"
    assert "not valid JSON" in lines[1]["rejected"]
    assert "cache hit" in lines[2]["skipped"]
    assert "escapes" in lines[3]["rejected"]


def test_normalize_of_a_missing_file_fails_with_usage_code(cli: dict[str, Result]) -> None:
    result = cli["normalize-missing-file"]
    assert result.code == 2
    assert result.stdout == ""
    assert "cannot read no/such/file.jsonl" in result.stderr


def test_normalize_sample_accounts_for_every_line(cli: dict[str, Result]) -> None:
    result = cli["normalize-sample"]
    assert result.code == 0, result.stderr
    lines = result.json_lines()
    sample_lines = (ROOT / "samples/dcache-billing.jsonl").read_text().splitlines()
    assert [line["line"] for line in lines] == [
        n for n, text in enumerate(sample_lines, start=1) if text.strip()
    ]
    assert all(line["event"]["source"] == DCACHE for line in lines if "event" in line)
    assert {key for line in lines for key in line if key != "line"} == {
        "event",
        "skipped",
        "rejected",
    }


# --- authorize -------------------------------------------------------------------------------


def test_authorize_sample_against_the_seed_tables(cli: dict[str, Result]) -> None:
    result = cli["authorize-sample"]
    assert result.code == 0, result.stderr
    events = {
        line["event"]["id"]: line["event"]
        for line in cli["normalize-sample"].json_lines()
        if "event" in line
    }
    decisions = result.json_lines()
    assert [d["id"] for d in decisions] == list(events)  # skipped/rejected lines yield nothing
    seen: set[str] = set()
    for decision in decisions:
        event = events[decision["id"]]
        subject, kind, size = event["subject"], event["type"], event["data"]["size"]
        delivered = {d["tenant"]: d["dataset"] for d in decision["deliveries"]}
        denied = {d["tenant"]: d["reason"] for d in decision["denied"]}
        if subject.startswith(P06_BEAMTIME):
            seen.add("p06")
            assert delivered == {"petra3-p06": "petra3-p06-11012346"}
            assert denied == {"mallory": "dataset is not shared with the tenant"}
        elif subject.startswith(P02_BEAMTIME) and kind == "storage.object.created":
            assert delivered["petra3-p02"] == "petra3-p02.1-11012345"
            if size > 500_000_000:
                seen.add("big")
                assert denied == {"hereon-analysis": "size above max_size"}
                assert "hereon-analysis" not in delivered
            else:
                seen.add("small")
                assert delivered["hereon-analysis"] == "petra3-p02.1-11012345"
        elif subject.startswith(P02_BEAMTIME):
            seen.add("p02-read")
            assert delivered == {}
            assert denied == {
                "petra3-p02": f"type {kind} not selected",
                "hereon-analysis": f"type {kind} not selected",
            }
        elif subject.startswith("/data/xfel/spb/202601/p002345/raw/"):
            seen.add("xfel")
            assert delivered == {"xfel-spb": "xfel-spb-p002345", "xfel-da": "xfel-spb-p002345"}
        assert "mallory" not in delivered
    assert seen == {"p06", "big", "small", "p02-read", "xfel"}


def test_authorize_refuses_invalid_seed_data(cli: dict[str, Result]) -> None:
    result = cli["authorize-bad-tables"]
    assert result.code == 2
    assert result.stdout == ""
    assert "1 problem(s) in" in result.stderr
    assert "x.toml: source: must be the storage's CloudEvents source URI" in result.stderr


# --- token inspect ---------------------------------------------------------------------------


def test_token_inspect_prints_the_caveats(cli: dict[str, Result]) -> None:
    result = cli["inspect"]
    assert result.code == 0, result.stderr
    body = result.only()
    assert body["caveats"] == [
        "activity:DOWNLOAD,READ_METADATA",
        "before:2026-11-20T08:10:00.000Z",
        f"path:{FILE}",
    ]
    assert (body["location"], body["identifier"]) == ("dcache.desy.example", "cli-test")


def test_token_inspect_of_garbage_exits_1(cli: dict[str, Result]) -> None:
    result = cli["inspect-garbage"]
    assert result.code == 1
    assert result.only()["error"].startswith("not a macaroon")


# --- token verify ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("verify-ok", id="download"),
        pytest.param("verify-ok-stdin", id="token-from-stdin"),
    ],
)
def test_token_verify_accepts_the_grant(cli: dict[str, Result], name: str) -> None:
    result = cli[name]
    assert result.code == 0, result
    assert result.only() == {
        "valid": True,
        "path": FILE,
        "activities": ["DOWNLOAD", "READ_METADATA"],
        "expires": "2026-11-20T08:10:00.000Z",
    }


def test_token_verify_defaults_to_now(cli: dict[str, Result]) -> None:
    result = cli["verify-ok-now"]
    assert result.code == 0, result
    assert result.only()["valid"] is True


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param(
            "verify-sibling",
            f"path {FILE.replace('00001', '00002')} outside {FILE}",
            id="sibling",
        ),
        pytest.param("verify-upload", "activity UPLOAD not allowed", id="other-activity"),
        pytest.param("verify-expired", "expired at 2026-11-20T08:10:00.000Z", id="after-expiry"),
        pytest.param("verify-wrong-key", "signature does not match the secret", id="wrong-key"),
    ],
)
def test_token_verify_refuses_outside_the_grant(
    cli: dict[str, Result], name: str, reason: str
) -> None:
    result = cli[name]
    assert result.code == 1, result
    body = result.only()
    assert body["valid"] is False
    assert body["reason"] == reason


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param(
            "verify-no-secret",
            "--secret-file, --path and --activity are required",
            id="no-secret-file",
        ),
        pytest.param("verify-unreadable-secret", "cannot read", id="unreadable-secret"),
        pytest.param("verify-bad-at", "bad ISO 8601 timestamp", id="bad-at"),
    ],
)
def test_token_verify_usage_errors_exit_2(cli: dict[str, Result], name: str, message: str) -> None:
    result = cli[name]
    assert result.code == 2, result
    assert result.stdout == ""
    assert message in result.stderr


@pytest.mark.parametrize(
    ("content", "key"),
    [
        pytest.param(KEY + b"\n", KEY, id="newline"),
        pytest.param(KEY + b"\r\n", KEY, id="crlf"),
        pytest.param(KEY, KEY, id="none"),
        pytest.param(KEY + b"\n\n", KEY + b"\n", id="only-one-newline-stripped"),
        pytest.param(b" " + KEY, b" " + KEY, id="other-whitespace-is-key"),
    ],
)
def test_the_secret_file_trailing_newline_is_not_part_of_the_key(
    content: bytes, key: bytes
) -> None:
    # the rule `token verify --secret-file` and the token issuer apply to the root key file
    assert strip_trailing_newline(content) == key
