import pytest

from tests.unit.host.fakehost import FakeHost


@pytest.fixture
def fake(tmp_path):
    return FakeHost(tmp_path / "host")
