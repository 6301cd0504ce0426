"""brick_agent: attach and detach block volumes (iSCSI, NVMe-oF, FC) on Linux hosts."""

__version__ = "0.1.0"
