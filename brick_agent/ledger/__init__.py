"""The attachment ledger: which attachments use which volume device on this host.

* :mod:`brick_agent.ledger.store` — the persisted ledger (one JSON file, atomic
  writes, fails closed: unreadable raises, corrupt is rebuilt from the kernel
  with its attachments unknown) and the identity helpers;
* :mod:`brick_agent.ledger.journal` — the journal of a large ledger (one checksummed
  record per commit) and :mod:`brick_agent.ledger.state` — its content in memory
  (indexes, the overlay a transaction changes);
* :mod:`brick_agent.ledger.reconcile` — the multiattach rule each connector
  shows at its methods: ``@ledger.records_attach`` on ``connect_volume``,
  ``@ledger.records_detach`` on ``disconnect_volume``.
"""

from brick_agent.ledger.reconcile import records_attach, records_detach
from brick_agent.ledger.store import (
    AttachmentLedger,
    AttachmentsUnknown,
    LedgerCorrupt,
    LedgerError,
    LedgerUnreadable,
)

__all__ = [
    "AttachmentLedger",
    "AttachmentsUnknown",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerUnreadable",
    "records_attach",
    "records_detach",
]
