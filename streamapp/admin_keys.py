"""Admin keys on disk and signing with the clock: the I/O around ``domain/updates``.

The domain verifies and signs from bytes and an explicit ``issued_at``; this module reads and
writes the key files and reads the clock, for the workers, the operator commands, tests and
benchmarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from streamapp.domain import updates
from streamapp.domain.updates import KeyRing, PrivateKey

log = logging.getLogger(__name__)
_loaded: dict[tuple[Path, ...], KeyRing] = {}


def keyring_from_paths(paths: Iterable[Path]) -> KeyRing:
    """The admin public keys of ``paths``: PEM files, or directories of ``*.pem`` files."""
    keys: list[updates.PublicKey] = []
    for path in paths:
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        keys.extend(updates.public_key_from_pem(file.read_bytes(), str(file)) for file in files)
    return KeyRing(keys)


def admin_keyring(paths: Iterable[Path]) -> KeyRing:
    """The workers' admin keys, loaded once per process (a key rotation is a configuration
    change and a restart); unreadable keys leave an empty ring: every update is refused."""
    wanted = tuple(paths)
    if wanted not in _loaded:
        try:
            _loaded[wanted] = keyring_from_paths(wanted)
        except (OSError, ValueError) as exc:
            log.error("no admin public keys loaded (%s): every update will be refused", exc)
            _loaded[wanted] = KeyRing()
    return _loaded[wanted]


def generate_admin_keypair(directory: Path, name: str = "admin") -> tuple[Path, Path]:
    """Write ``<name>.key`` (private, mode 0600) and ``<name>.pub.pem`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub.pem"
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists: refusing to overwrite a key")
    private_pem, public_pem = updates.new_private_key_pem()
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path) -> PrivateKey:
    return updates.private_key_from_pem(path.read_bytes(), str(path))


def sign_update(
    kind: str,
    op: str,
    name: str,
    *,
    version: int,
    spec: Mapping[str, Any] | None,
    private_key: PrivateKey,
    issued_at: int | None = None,
) -> str:
    """``domain.updates.sign_update`` issued now (or at ``issued_at``)."""
    return updates.sign_update(
        kind,
        op,
        name,
        version=version,
        spec=spec,
        private_key=private_key,
        issued_at=int(time.time()) if issued_at is None else issued_at,
    )
