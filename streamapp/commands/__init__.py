"""Operator commands: ``streamapp <command>`` (faust's CLI; ``streamapp worker`` runs a worker).

Each command is the offline form of a service code path: same domain functions, no broker
unless it publishes or reads topics. The modules register their commands on import (faust's
autodiscovery scans this package); they are imported here too so ``import streamapp.commands``
alone registers all of them.
"""

from streamapp.commands import bridge, events, tables, tenants, tokens

__all__ = ["bridge", "events", "tables", "tenants", "tokens"]
