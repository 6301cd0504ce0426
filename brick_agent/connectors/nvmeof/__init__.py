"""NVMe-oF (TCP, RDMA, FC): the connector flow (``connector``), what it may do to the
host and the privileged adapter (``actions``), and dm-multipath over namespaces
(``multipath``)."""
