"""qsocube.core.parallel.ordered_map: order, shared arguments and errors on every path."""

from __future__ import annotations

import os

import pytest

from qsocube.core.parallel import default_processes, ordered_map, processes_for, threaded_map


def offset_square(item: int, offset: int, table: dict) -> tuple[int, int, int]:
    if item == table["fail_at"]:
        raise ValueError(f"item {item} is bad")
    return item * item + offset, table["tag"], os.getpid()


@pytest.mark.parametrize("processes", [1, 2])
def test_results_come_back_in_order_with_the_shared_arguments(processes: int):
    items = list(range(23))
    results = list(ordered_map(offset_square, items, 5, {"fail_at": -1, "tag": 7},
                               processes=processes, window=3))
    assert [r[0] for r in results] == [i * i + 5 for i in items]
    assert {r[1] for r in results} == {7}
    pids = {r[2] for r in results}
    assert (os.getpid() in pids) == (processes == 1)  # the parallel path ran elsewhere
    assert len(pids) <= processes


@pytest.mark.parametrize("processes", [1, 2])
def test_an_error_in_one_item_reaches_the_caller_after_the_earlier_results(processes: int):
    got = []
    with pytest.raises(ValueError, match="item 4 is bad"):
        for result in ordered_map(offset_square, range(10), 0, {"fail_at": 4, "tag": 0},
                                  processes=processes):
            got.append(result[0])
    assert got == [0, 1, 4, 9]


def test_processes_for_caps_at_one_per_partition_and_runs_one_partition_here():
    assert [processes_for(8, n) for n in (0, 1, 2, 3, 20)] == [1, 1, 2, 3, 8]
    assert processes_for(1, 20) == 1


def test_default_processes_is_the_usable_cores_capped():
    assert default_processes() == max(min(len(os.sched_getaffinity(0)), 8), 1)


@pytest.mark.parametrize("processes", [1, 2])
def test_at_most_a_window_of_items_is_taken_ahead_of_the_results(processes: int):
    """Bounded memory: a million partitions must not all be submitted (or read) at once."""
    taken = []

    def items():
        for i in range(40):
            taken.append(i)
            yield i

    results = ordered_map(offset_square, items(), 0, {"fail_at": -1, "tag": 0},
                          processes=processes, window=3)
    for count, result in enumerate(results, start=1):
        assert result[0] == (count - 1) ** 2
        assert len(taken) - count <= 3
    assert len(taken) == 40


def test_threaded_map_keeps_order_and_raises_the_items_error():
    import threading
    import time

    seen = set()

    def slow_first(item: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.05 if item == 0 else 0.0)
        if item == 7:
            raise ValueError("item 7")
        return item * item

    assert threaded_map(slow_first, range(5), threads=3) == [0, 1, 4, 9, 16]
    assert len(seen) > 1  # the items ran on threads of their own
    with pytest.raises(ValueError, match="item 7"):
        threaded_map(slow_first, range(9), threads=2)
    seen.clear()
    assert threaded_map(slow_first, [2, 3], threads=1) == [4, 9]
    assert seen == {threading.get_ident()}  # one thread: here
