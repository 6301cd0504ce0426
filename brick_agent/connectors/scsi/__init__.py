"""What every SCSI transport (iSCSI, FC) shares: the host actions and their privileged
adapter (``actions``) and the volume steps after the transport made the LUNs appear
(``volume``: readiness, identity, multipath, detach)."""
