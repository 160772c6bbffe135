"""The interleaved measurement of fastconv._tune.Tuner (``rounds=``): candidates are timed in rotating
rounds and keep their fastest call, so a burst of load on some calls cannot pick the slower candidate;
candidates far behind stop being timed; the budget bounds the rounds. Times are scripted, not measured."""
from __future__ import annotations

import numpy as np

import fastconv
from fastconv import _tune


class _Impl:
    """A stand-in candidate: ``run`` records its name; compute_spec is the identity."""

    def __init__(self, name, log):
        self.name, self.algo, self._log = name, name.split(":")[2].split("/")[0], log

    def compute_spec(self, spec):
        return spec

    def run(self, spec, *arrays):
        self._log.append(self.name)


def _setup(script, rounds=5, budget_s=10.0):
    """A tuner whose clock returns, for the k-th timed call of candidate c, script[c][k] (the last entry
    repeats)."""
    log = []
    impls = [_Impl("numba:conv:direct/a", log), _Impl("numba:conv:im2col/b", log)]
    seen, order = {}, []

    def time_one(call):
        call()
        name = log[-1]
        k = seen[name] = seen.get(name, -1) + 1
        order.append(name)
        return script[name][min(k, len(script[name]) - 1)]

    tuner = _tune.Tuner("test-rounds", persist=False, time_one=time_one, xp=lambda: np,
                        rounds=rounds, budget_s=budget_s)
    x = np.zeros((1, 2, 6, 6), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    spec = fastconv.conv_spec(x, w, None)
    seen["order"] = order
    return tuner, impls, spec, (x, w, None), log, seen


def test_a_burst_on_the_faster_candidates_first_call_does_not_pick_the_slower():
    # b's first timed call lands in a burst (3.0 s); its later calls are 1.0, a is 1.5 throughout. Timing
    # each once (the old rule) would pick a.
    tuner, impls, spec, arrays, log, seen = _setup({"numba:conv:direct/a": [1.5],
                                                    "numba:conv:im2col/b": [3.0, 1.0]})
    assert tuner.choose("ctx", spec, impls, arrays).name == "numba:conv:im2col/b"
    assert seen["numba:conv:direct/a"] >= 1 and seen["numba:conv:im2col/b"] >= 1


def test_rounds_rotate_and_keep_the_fastest_call():
    tuner, impls, spec, arrays, log, seen = _setup({"numba:conv:direct/a": [2.0, 1.2, 2.0],
                                                    "numba:conv:im2col/b": [1.5]}, rounds=3)
    times = tuner.measure(spec, impls, arrays)
    assert times == {"numba:conv:direct/a": 1.2, "numba:conv:im2col/b": 1.5}
    assert seen["order"] == ["numba:conv:direct/a", "numba:conv:im2col/b",     # round 1 (priority order)
                     "numba:conv:im2col/b", "numba:conv:direct/a",     # round 2, rotated by one
                     "numba:conv:direct/a", "numba:conv:im2col/b"]     # round 3


def test_a_candidate_far_behind_is_timed_no_more():
    tuner, impls, spec, arrays, log, seen = _setup({"numba:conv:direct/a": [40.0],
                                                    "numba:conv:im2col/b": [1.0]}, rounds=5, budget_s=1000.0)
    times = tuner.measure(spec, impls, arrays)
    assert seen["numba:conv:direct/a"] == 0 and seen["numba:conv:im2col/b"] == 4    # 0-based: 1 and 5 calls
    assert times["numba:conv:direct/a"] == 40.0


def test_the_budget_stops_after_two_rounds():
    tuner, impls, spec, arrays, log, seen = _setup({"numba:conv:direct/a": [1.0],
                                                    "numba:conv:im2col/b": [1.1]}, rounds=5, budget_s=0.5)
    tuner.measure(spec, impls, arrays)
    assert seen["numba:conv:direct/a"] == seen["numba:conv:im2col/b"] == 1      # two calls each


def test_without_rounds_each_candidate_is_timed_once():
    tuner, impls, spec, arrays, log, seen = _setup({"numba:conv:direct/a": [1.0],
                                                    "numba:conv:im2col/b": [1.1]}, rounds=None)
    tuner.measure(spec, impls, arrays)
    assert seen["numba:conv:direct/a"] == seen["numba:conv:im2col/b"] == 0


def test_no_candidate_measurable_leaves_the_choice_to_the_rule():
    """Every candidate out of memory at its warm-up: nothing measured, no round run, the first candidate."""
    log = []
    impls = [_Impl("numba:conv:direct/a", log), _Impl("numba:conv:im2col/b", log)]

    def run(spec, *arrays):
        raise MemoryError("no room")
    for i in impls:
        i.run = run
    tuner = _tune.Tuner("test-rounds", persist=False, time_one=lambda call: call(), xp=lambda: np,
                        unmeasurable=lambda: (MemoryError,), rounds=5)
    x, w = np.zeros((1, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    spec = fastconv.conv_spec(x, w, None)
    assert tuner.measure(spec, impls, (x, w, None)) == {}
    assert tuner.choose("ctx", spec, impls, (x, w, None)).name == "numba:conv:direct/a"


def test_warmups_are_untimed_calls_before_the_first_timed_one():
    """A tuner made with ``warmups=2`` calls each candidate twice before timing it (numba's: a chunked
    kernel's second call is its first on claimed chunks, slower once); the default calls once."""
    for warmups, untimed in ((2, 2), (1, 1)):
        log = []
        impls = [_Impl("numba:conv:direct/a", log), _Impl("numba:conv:im2col/b", log)]
        timed = []

        def time_one(call):
            call()
            timed.append(log[-1])
            return 1.0
        tuner = _tune.Tuner("test-warmups", persist=False, time_one=time_one, xp=lambda: np, warmups=warmups)
        x, w = np.zeros((1, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32)
        tuner.measure(fastconv.conv_spec(x, w, None), impls, (x, w, None))
        a, b = "numba:conv:direct/a", "numba:conv:im2col/b"
        assert log == [a] * (untimed + 1) + [b] * (untimed + 1)      # the warm-ups, then the timed call
        assert timed == [a, b]
