"""NVMe-oF (TCP, RDMA, FC): the connector flow (``connector``), what it may do to the
host and the privileged adapter (``actions``), dm-multipath over namespaces
(``multipath``), and the host NQN / host ID, created once when missing (``identity``)."""
