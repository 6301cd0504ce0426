import math

from brick_agent.deadline import Deadline


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_after_remaining_expired():
    c = Clock()
    d = Deadline.after(10, clock=c)
    assert d.remaining() == 10 and not d.expired and d.budget == 10
    c.now += 4
    assert d.remaining() == 6 and d.elapsed() == 4
    c.now += 6
    assert d.expired and d.remaining() == 0.0
    c.now += 5
    assert d.remaining() == 0.0


def test_negative_budget_is_expired():
    c = Clock()
    d = Deadline.after(-3, clock=c)
    assert d.expired and d.remaining() == 0.0


def test_capped_never_outlives_parent():
    c = Clock()
    parent = Deadline.after(5, clock=c)
    assert parent.capped(2).remaining() == 2
    assert parent.capped(60).remaining() == 5
    c.now += 4
    assert parent.capped(3).remaining() == 1


def test_timeout_and_never():
    c = Clock()
    d = Deadline.after(5, clock=c)
    assert d.timeout() == 5 and d.timeout(cap=0.5) == 0.5
    n = Deadline.never(clock=c)
    assert not n.expired and math.isinf(n.remaining()) and repr(n) == "Deadline(never)"
    assert "remaining=5.000s" in repr(d)


def test_reserving_ends_earlier_but_not_before_now():
    c = Clock()
    d = Deadline.after(30, clock=c)
    work = d.reserving(3)
    assert work.remaining() == 27 and work.budget == 27 and d.remaining() == 30
    assert work.clock is c
    c.now += 27
    assert work.expired and d.remaining() == 3
    late = d.reserving(5)  # less than the reserve left: expires now, not in the past
    assert late.expired and late.remaining() == 0.0
    assert Deadline.never(clock=c).reserving(5).remaining() == math.inf
