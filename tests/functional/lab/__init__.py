"""Target fixtures for the real-kernel lab VM (tools/kernel-lab): LIO iSCSI,
nvmet over TCP, FCoE + tcm_fc. Configfs writes only; guest-only (root, lab kernel)."""

from ._sys import LabError, wait_for
from .fcloop import FcLoop, fcloop_available
from .fcoe import FcoeFabric, FcoeTarget
from .lio import LioIscsiTarget, LioLun, local_initiator_iqn
from .nvmet import NvmetNamespace, NvmetPort, NvmetSubsystem

IN_LAB_ENV = "BRICK_LAB"

__all__ = ["FcLoop", "fcloop_available", "FcoeFabric", "FcoeTarget", "IN_LAB_ENV", "LabError", "LioIscsiTarget", "LioLun",
           "NvmetNamespace", "NvmetPort", "NvmetSubsystem", "local_initiator_iqn", "wait_for"]
