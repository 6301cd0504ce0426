"""Target fixtures for the real-kernel lab VM (tools/kernel-lab): LIO iSCSI,
nvmet over TCP/RDMA, FCoE + tcm_fc, nvme-fcloop, soft-RoCE (rxe). Configfs writes
only; guest-only (root, lab kernel). Every target is a :class:`LabTarget`:
``create()``/``destroy()`` or ``with``.

Also the raw-host checks (:mod:`brick_lab.rawhost`), the stock initiator CLI steps
(:mod:`brick_lab.initiator`) and attached scenarios (:mod:`brick_lab.scenarios`) the
real-kernel tests (tests/functional) and the lab tools share.

A development package installed beside brick_agent (``pip install -e .``) and used
from a checkout: it finds ``etc/brick_agent`` and ``tools/kernel-lab`` next to itself.
brick_agent never imports it."""

from ._sys import LabError, wait_for
from .base import LabTarget
from .fcloop import FcLoop, fcloop_available
from .fcoe import FcoeFabric, FcoeTarget
from .lio import LioIscsiTarget, LioLun, local_initiator_iqn
from .nvmet import NvmetNamespace, NvmetPort, NvmetSubsystem
from .rxe import RxeLink, rxe_available
from .service_user import ServiceUser

IN_LAB_ENV = "BRICK_LAB"

__all__ = [
    "FcLoop",
    "fcloop_available",
    "FcoeFabric",
    "FcoeTarget",
    "IN_LAB_ENV",
    "LabError",
    "LabTarget",
    "LioIscsiTarget",
    "LioLun",
    "NvmetNamespace",
    "NvmetPort",
    "NvmetSubsystem",
    "RxeLink",
    "ServiceUser",
    "local_initiator_iqn",
    "rxe_available",
    "wait_for",
]
