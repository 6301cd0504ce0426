"""Fibre Channel: the connector flow (``connector``) and the fabric view of the host's
HBAs and remote ports (``view``); its host actions are the SCSI ones (``scsi.actions``)."""
