"""iSCSI: the connector flow (``connector``), what it may do to the host and the
privileged adapter that does it (``actions``), and session handling (``sessions``)."""
