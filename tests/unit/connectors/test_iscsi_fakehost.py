"""A fake iSCSI host for the connector's unit tests, and checks that it reads like a real one.

:class:`FakeIscsi` implements the connector's ``IscsiActions`` by mutating a
fake sysfs/dev tree the way the kernel, iscsid and multipathd would: a login
creates a session (and a SCSI host); a ``c t l`` scan creates the LUN's
``sdX`` if the target exports that LUN; a delete removes it; a logout removes
the session; ``multipath_add`` builds a ``dm-N`` map.  The target side is a
small model (:class:`FakeArray`): portals, IQNs, LUNs with WWIDs and sizes,
CHAP secrets, reachability.  Tests assert on the tree, not on calls.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import threading

import pytest

from brick_agent.errors import AuthenticationFailed, CommandFailed, TargetUnreachable
from brick_agent.host import iscsi as host_iscsi
from brick_agent.host import multipath as host_mpath
from brick_agent.host.scsi import Hctl, scsi_device
from brick_agent.connectors.iscsi.actions import NodeSettings
from tests.unit.connectors.scsi_fakes import FakeLun, FakeScsiKernel, udev_of, wwid_of
from tests.unit.host.fakehost import FakeHost, sd_name

IQN_A = "iqn.2003-01.org.linux-iscsi.lab:tgt-a"
IQN_B = "iqn.2003-01.org.linux-iscsi.lab:tgt-b"
P1 = "127.0.0.1:3260"
P2 = "127.0.0.2:3260"


@dataclasses.dataclass
class FakeTarget:
    iqn: str
    portals: list[str]
    luns: dict[int, FakeLun]
    chap: tuple[str, str] | None = None
    discovery_chap: tuple[str, str] | None = None


class FakeArray:
    """The storage side: which targets, LUNs and credentials exist."""

    def __init__(self) -> None:
        self.targets: list[FakeTarget] = []
        self.unreachable: set[str] = set()

    def add(
        self,
        iqn: str,
        portals: list[str],
        luns: dict[int, FakeLun],
        chap: tuple[str, str] | None = None,
    ) -> FakeTarget:
        t = FakeTarget(iqn, list(portals), dict(luns), chap)
        self.targets.append(t)
        return t

    def find(self, portal: str, iqn: str) -> FakeTarget | None:
        for t in self.targets:
            if t.iqn == iqn and portal in t.portals:
                return t
        return None


class FakeIscsi(FakeScsiKernel):
    """IscsiActions acting on a FakeHost tree (see module doc)."""

    def __init__(
        self,
        host: FakeHost,
        array: FakeArray,
        *,
        manual_scan: bool = True,
        multipathd: bool = True,
        auto_map: bool = False,
    ) -> None:
        self.h = host
        self.array = array
        self.manual = manual_scan
        self.multipathd = multipathd
        self.auto_map = auto_map
        self.lock = threading.RLock()
        self.log: list[tuple] = []  # what was done, for diagnostics and counts
        self.fail_flush: set[str] = set()
        self.fail_delete: set[str] = set()
        self.fail_logout: set[str] = set()  # target IQNs whose logout fails
        self.passwords_seen: list[str] = []
        self._sid = 0
        self._host = 9
        self._sd = 0
        self._dm = 0
        self.sessions: dict[int, tuple[int, str, str]] = {}  # sid -> (host, portal, iqn)
        self._monitors: list[queue.Queue] = []

    # ------------------------------------------------------------ udev model
    def enable_udev(self, remove_delay: float = 0.0) -> None:
        """Model udevd: a disk gets its by-path link and database entry when it appears;
        they go ``remove_delay`` seconds after the kernel removed it (udev lags), then
        every :meth:`monitor` gets a "remove" event (udev's netlink broadcast)."""
        self.udev = True
        self.udev_remove_delay = remove_delay
        self.h.attr("run/udev/control", "")

    def monitor(self) -> FakeUdevMonitor:
        """A monitor of this fake's udev events, for ``DeviceWatch(monitor=...)``."""
        q: queue.Queue = queue.Queue()
        with self.lock:
            self._monitors.append(q)
        return FakeUdevMonitor(q)

    def _udev_add(self, sid: int, lun: int, name: str) -> None:
        _, portal, iqn = self.sessions[sid]
        link = f"ip-{portal}-iscsi-{iqn}-lun-{lun}"
        self.h.disk_link("by-path", link, name)
        devnum = self._read(f"sys/class/block/{name}/dev")
        self.h.attr(f"run/udev/data/b{devnum}", f"S:disk/by-path/{link}")

    def _udev_remove(self, name: str, devnum: str | None) -> None:
        def remove() -> None:
            with self.lock:
                for link in self.h.p("dev/disk/by-path").glob("*"):
                    if link.is_symlink() and os.path.basename(os.readlink(link)) == name:
                        link.unlink()
                if devnum and self.h.p(f"run/udev/data/b{devnum}").exists():
                    self.h.p(f"run/udev/data/b{devnum}").unlink()
                for q in self._monitors:
                    q.put(("remove", name))

        if not self.udev:
            return
        if self.udev_remove_delay > 0:
            timer = threading.Timer(self.udev_remove_delay, remove)
            timer.daemon = True
            timer.start()
        else:
            remove()

    # ------------------------------------------------------------ helpers
    def _next_sd(self) -> str:
        n = self._sd
        self._sd += 1
        return sd_name(n)

    def _session_dir(self, sid: int) -> str:
        host, _, _ = self.sessions[sid]
        return f"sys/devices/platform/host{host}/session{sid}"

    def _sid_for_host(self, host: int) -> int | None:
        for sid, (h, _, _) in self.sessions.items():
            if h == host:
                return sid
        return None

    def add_lun_device(self, sid: int, lun: int, wwid: str, sectors: int) -> str:
        """Create the SCSI device of ``lun`` under session ``sid`` (what a scan does)."""
        host, _, _ = self.sessions[sid]
        name = self._next_sd()
        self.h.scsi_disk(
            self._session_dir(sid), f"{host}:0:0:{lun}", name, wwid=wwid, sectors=sectors
        )
        if self.udev:
            self._udev_add(sid, lun, name)
        return name

    # ------------------------------------------------------------ IscsiActions
    def manual_scan_supported(self) -> bool:
        return self.manual

    def discover(self, portal, iface, auth, timeout):
        with self.lock:
            self.log.append(("discover", portal))
            if portal in self.array.unreachable:
                raise TargetUnreachable(f"discovery at {portal} failed")
            out = []
            for t in self.array.targets:
                if portal in t.portals:
                    out += [(p, t.iqn) for p in t.portals]
            return out

    def prepare_nodes(self, nodes: list[NodeSettings]) -> None:
        with self.lock:
            self.log.append(("prepare_nodes", tuple(n.portal for n in nodes)))

    def login(self, node: NodeSettings, prepared: bool = False) -> None:
        with self.lock:
            self.log.append(("login", node.portal, node.iqn))
            if node.auth is not None:
                self.passwords_seen.append(node.auth.password.reveal())
            if node.portal in self.array.unreachable:
                raise TargetUnreachable(f"login to {node.iqn} at {node.portal} timed out")
            t = self.array.find(node.portal, node.iqn)
            if t is None:
                raise CommandFailed(["iscsiadm", "--login"], 21, "no records found")
            if t.chap is not None:
                given = (node.auth.username, node.auth.password.reveal()) if node.auth else None
                if given != t.chap:
                    raise AuthenticationFailed(
                        f"CHAP authentication to {node.iqn} at {node.portal} was rejected"
                    )
            for _, portal, iqn in self.sessions.values():
                if portal == node.portal and iqn == node.iqn:
                    return  # iscsiadm exit 15: already logged in
            self._sid += 1
            self._host += 1
            sid, host = self._sid, self._host
            addr, port = node.portal.rsplit(":", 1)
            self.h.iscsi_session(sid, host, node.iqn, addr, int(port))
            self.h.attr(
                f"sys/devices/platform/host{host}/session{sid}/iscsi_session/"
                f"session{sid}/target_id",
                0,
            )
            self.sessions[sid] = (host, node.portal, node.iqn)
            if not node.manual_scan:
                for lun, spec in t.luns.items():
                    self.add_lun_device(sid, lun, spec.wwid, spec.sectors)

    def logout(self, portal, iqn, iface, timeout=None) -> None:
        with self.lock:
            self.log.append(("logout", portal, iqn))
            if iqn in self.fail_logout:
                raise CommandFailed(["iscsiadm", "--logout"], 8, "session busy")
            for sid, (host, p, q) in list(self.sessions.items()):
                if p == portal and q == iqn:
                    for dev in host_iscsi.session_devices(
                        self.h.roots, host_iscsi.read_session(self.h.roots, sid)
                    ):
                        self._remove_scsi_device(dev.hctl)
                    shutil.rmtree(self.h.p(f"sys/devices/platform/host{host}"))
                    for rel in (
                        f"sys/class/iscsi_session/session{sid}",
                        f"sys/class/iscsi_connection/connection{sid}:0",
                        f"sys/class/scsi_host/host{host}",
                        f"sys/bus/scsi/devices/host{host}",
                    ):
                        if os.path.lexists(self.h.p(rel)):
                            os.unlink(self.h.p(rel))
                    del self.sessions[sid]

    def scan_lun(self, host, channel, target, lun) -> None:
        with self.lock:
            self.log.append(("scan", host, channel, target, lun))
            sid = self._sid_for_host(host)
            assert sid is not None, f"scan of host{host} without a session"
            _, portal, iqn = self.sessions[sid]
            t = self.array.find(portal, iqn)
            if lun not in t.luns or scsi_device(self.h.roots, Hctl(host, 0, 0, lun)):
                return
            name = self.add_lun_device(sid, lun, t.luns[lun].wwid, t.luns[lun].sectors)
            if self.auto_map and self.multipathd:
                self._map_path(name)

    def rescan_device(self, hctl: Hctl) -> None:
        with self.lock:
            self.log.append(("rescan", str(hctl)))
            sid = self._sid_for_host(hctl.host)
            _, portal, iqn = self.sessions[sid]
            self._reread(hctl, self.array.find(portal, iqn).luns.get(hctl.lun))

    # ------------------------------------------------------------ test conveniences
    def count(self, op: str) -> int:
        return sum(1 for entry in self.log if entry[0] == op)

    def state(self) -> dict:
        """What the host has now: sessions, SCSI devices, maps."""
        roots = self.h.roots
        return {
            "sessions": sorted((s.portal, s.target_iqn) for s in host_iscsi.iscsi_sessions(roots)),
            "devices": sorted(
                d for d in os.listdir(self.h.p("sys/class/block")) if d.startswith("sd")
            ),
            "maps": [m.dm_name for m in host_mpath.multipath_maps(roots)],
        }


class FakeUdevMonitor:
    """pyudev-monitor-like ``poll(timeout)`` over one subscriber queue of FakeIscsi."""

    def __init__(self, q: queue.Queue) -> None:
        self._q = q

    def poll(self, timeout: float | None = None):
        try:
            return self._q.get(timeout=timeout) if timeout else self._q.get_nowait()
        except queue.Empty:
            return None


# ---------------------------------------------------------------- the fake's own checks
@pytest.fixture
def fake(tmp_path):
    host = FakeHost(tmp_path)
    array = FakeArray()
    array.add(IQN_A, [P1, P2], {0: FakeLun(wwid_of(1)), 1: FakeLun(wwid_of(2))})
    return FakeIscsi(host, array)


def test_login_scan_delete_logout_read_back_like_the_kernel(fake):
    fake.login(NodeSettings(P1, IQN_A))
    [s] = host_iscsi.find_sessions(fake.h.roots, IQN_A, "127.0.0.1", 3260)
    assert s.logged_in and s.host_number == 10
    assert host_iscsi.session_devices(fake.h.roots, s) == []
    fake.scan_lun(10, 0, 0, 1)
    [dev] = host_iscsi.session_devices(fake.h.roots, s)
    assert (str(dev.hctl), dev.name, dev.wwid) == ("10:0:0:1", "sda", wwid_of(2))
    assert os.path.exists(fake.h.roots.devfs("sda"))
    fake.delete_device(dev.hctl)
    assert host_iscsi.session_devices(fake.h.roots, s) == []
    assert fake.state()["devices"] == []
    fake.logout(P1, IQN_A, "default")
    assert fake.state()["sessions"] == []


def test_map_of_two_paths(fake):
    fake.login(NodeSettings(P1, IQN_A))
    fake.login(NodeSettings(P2, IQN_A))
    fake.scan_lun(10, 0, 0, 0)
    fake.scan_lun(11, 0, 0, 0)
    fake.multipath_add(udev_of(1), ["sda", "sdb"])
    m = host_mpath.map_for_wwid(fake.h.roots, udev_of(1))
    assert m is not None and m.slaves == ("sda", "sdb") and m.uuid == "mpath-" + udev_of(1)
    fake.multipath_remove(m.name)
    assert host_mpath.multipath_maps(fake.h.roots) == []


def test_udev_model_makes_links_and_removes_them_late_with_an_event(fake):
    fake.enable_udev(remove_delay=0.05)
    mon = fake.monitor()
    fake.login(NodeSettings(P1, IQN_A))
    fake.scan_lun(10, 0, 0, 1)
    link = fake.h.p(f"dev/disk/by-path/ip-{P1}-iscsi-{IQN_A}-lun-1")
    assert os.path.realpath(link) == str(fake.h.p("dev/sda"))
    fake.delete_device(Hctl(10, 0, 0, 1))
    assert os.path.islink(link)  # udev has not processed the removal yet
    assert mon.poll(2) == ("remove", "sda")
    assert not os.path.lexists(link)
