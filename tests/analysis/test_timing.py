import os

import pytest
import torch

from rnnpool.analysis import timing
from rnnpool.analysis.timing import CpuUse, contention_warning, cpu_use, parse_proc_stat

STAT = """cpu  {agg}
cpu0 {c0}
cpu1 {c1}
intr 12345 0 0
ctxt 999
"""


def _fields(v):
    return " ".join(map(str, v))


def _stat(c0, c1):
    agg = [a + b for a, b in zip(c0, c1)]
    return STAT.format(agg=_fields(agg), c0=_fields(c0), c1=_fields(c1))


def test_parse_proc_stat_sums_the_chosen_cpus():
    # user nice system idle iowait irq softirq steal guest guest_nice
    c0 = [100, 1, 50, 800, 10, 2, 5, 20, 7, 0]
    c1 = [3, 0, 4, 900, 0, 0, 0, 1, 0, 0]
    text = _stat(c0, c1)
    assert parse_proc_stat(text, [0]) == (100 + 1 + 50 + 2 + 5, 20, sum(c0[:8]))
    assert parse_proc_stat(text, [1]) == (7, 1, sum(c1[:8]))
    assert parse_proc_stat(text) == (158 + 7, 21, sum(c0[:8]) + sum(c1[:8]))
    with pytest.raises(ValueError, match="per-CPU"):
        parse_proc_stat(text, [5])


def test_cpu_use_measures_the_interval(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    before0, before1 = [1000, 0, 0, 1000, 0, 0, 0, 0], [0, 0, 0, 2000, 0, 0, 0, 0]
    # Over the interval (100 jiffies per CPU): CPU 0 runs other work 60 and is stolen 20, CPU 1
    # is idle throughout.
    after0 = [1060, 0, 0, 1020, 0, 0, 0, 20]
    after1 = [0, 0, 0, 2100, 0, 0, 0, 0]
    stat.write_text(_stat(before0, before1))
    monkeypatch.setattr(timing.time, "sleep", lambda s: stat.write_text(_stat(after0, after1)))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    use = cpu_use(0.0, stat)
    assert use == CpuUse(2, pytest.approx(0.6), pytest.approx(0.2))


def test_cpu_use_without_proc_stat(tmp_path):
    assert cpu_use(0.0, tmp_path / "missing") is None


@pytest.mark.parametrize("use, threads, warns", [
    (CpuUse(2, 0.05, 0.0), 2, False),
    (CpuUse(2, 0.4, 0.0), 2, True),
    (CpuUse(2, 0.0, 0.4), 2, True),   # the hypervisor's share counts too
    (CpuUse(2, 0.9, 0.0), 1, False),
    (CpuUse(16, 3.0, 0.0), 2, False),
    (None, 2, False),
])
def test_contention_warning(use, threads, warns):
    msg = contention_warning(use, threads)
    assert (msg is not None) == warns
    if warns:
        assert f"{threads} threads" in msg


def test_describe_cpu_use(monkeypatch):
    monkeypatch.setattr(timing, "cpu_use", lambda interval: CpuUse(2, 0.05, 0.01))
    assert timing.describe_cpu_use(2).splitlines() == [
        "other work on the 2 CPUs: 0.05 busy, 0.01 stolen by the hypervisor (CPUs' worth, "
        "over 0.5 s)"]
    monkeypatch.setattr(timing, "cpu_use", lambda interval: CpuUse(2, 1.2, 0.0))
    lines = timing.describe_cpu_use(2).splitlines()
    assert len(lines) == 2 and lines[1].startswith("warning: other work keeps 1.20 of 2 CPUs")
    monkeypatch.setattr(timing, "cpu_use", lambda interval: None)
    assert timing.describe_cpu_use(2) == ""


@pytest.mark.parametrize("device, synced", [
    ("cuda", "cuda"), ("cuda:1", "cuda:1"), (torch.device("cuda", 1), "cuda:1"),
    ("cpu", None), (torch.device("cpu"), None),
])
def test_best_times_synchronises_the_cuda_device_it_times(monkeypatch, device, synced):
    # "cuda:1" and torch.device("cuda", 1) were timed without any synchronisation: the times
    # were the kernels' launch, not their run. Each timed call must be fenced on its device.
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: events.append(("sync", d)))
    t = timing.best_times({"a": lambda: events.append("a"), "b": lambda: events.append("b")},
                          2, device)
    assert sorted(t) == ["a", "b"]
    if synced is None:
        assert all(e in ("a", "b") for e in events)
        return
    sync = ("sync", torch.device(synced))
    # After the warm-up calls, every timed call sits between two synchronisations of `device`.
    assert events == ["a", "b"] + [sync, "a", sync, sync, "b", sync] * 2
