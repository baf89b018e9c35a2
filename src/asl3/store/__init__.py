"""The event and key store: SQLite by default, PostgreSQL for several hosts.

It holds API keys (as SHA-256 only), principals and their exemptions, one decision event
per proxied request, which offline monitoring reads back, and the egress proxy's blocks and
unblocks (``egress_alerts``). It never imports classifier code: the gateway and the CLI
translate between the store's records and the guard's types.
"""

from asl3.errors import StoreError
from asl3.store.db import Store
from asl3.store.records import EgressAlert, Event, ExemptionInfo, KeyInfo, NewKey
from asl3.store.writer import EventWriter

__all__ = ["EgressAlert", "Event", "EventWriter", "ExemptionInfo", "KeyInfo", "NewKey", "Store",
           "StoreError"]
