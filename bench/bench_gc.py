#!/usr/bin/env python3
"""bench_gc.py -- CPython's own collector on the shapes of bench_gcpy.c
(G1-G4, docs/BENCHMARKS.md), printed as RESULT lines (bench_util.h, B4).

    python3 bench/bench_gc.py [-n SCALE] [-r REPS] [-w G1|G2|G3|G4]

Objects are lists (container objects CPython's gc tracks), as objstore's
objects are; each figure is the best of REPS, in objects per second:
  G1  500,000 two-object cycles dropped, then gc.collect()
  G2  a 1,000,000-object ring dropped, then gc.collect()
  G3  gc.collect() over 1,000,000 live reachable objects, no garbage
  G4  1,000,000 young objects in never-rooted 2-cycles, created with the
      collector enabled (generation 0 collects them as they come)
"""
import gc
import sys
import time


def best(reps, fn):
    t = None
    for _ in range(reps):
        d = fn()
        t = d if t is None or d < t else t
    return t


def g1(n):
    gc.disable()
    cycles = []
    for _ in range(n // 2):
        a = [None]
        b = [a]
        a[0] = b
        cycles.append(a)
    del a, b
    gc.collect()
    t0 = time.perf_counter()
    del cycles
    got = gc.collect()
    d = time.perf_counter() - t0
    gc.enable()
    assert got >= n, got
    return d


def g2(n):
    gc.disable()
    first = [None]
    prev = first
    for _ in range(n - 1):
        x = [None]
        prev[0] = x
        prev = x
    prev[0] = first
    del prev, x
    gc.collect()
    t0 = time.perf_counter()
    del first
    got = gc.collect()
    d = time.perf_counter() - t0
    gc.enable()
    assert got >= n, got
    return d


def g3(n):
    gc.disable()
    live = [[i] for i in range(n - 1)]
    gc.collect()
    t0 = time.perf_counter()
    got = gc.collect()
    d = time.perf_counter() - t0
    gc.enable()
    assert got == 0, got
    del live
    return d


def g4(n):
    gc.collect()
    gc.enable()
    t0 = time.perf_counter()
    for _ in range(n // 2):
        a = [None]
        b = [a]
        a[0] = b
    del a, b
    d = time.perf_counter() - t0
    gc.collect()
    return d


def main():
    scale, reps, only = 1000000, 3, None
    args = sys.argv[1:]
    while args:
        if args[0] == "-n" and len(args) > 1:
            scale = int(args[1])
            args = args[2:]
        elif args[0] == "-r" and len(args) > 1:
            reps = int(args[1])
            args = args[2:]
        elif args[0] == "-w" and len(args) > 1:
            only = args[1]
            args = args[2:]
        else:
            sys.exit("usage: bench_gc.py [-n SCALE] [-r REPS] [-w G1|G2|G3|G4]")
    print("# CPython %s, gc thresholds %s" % (sys.version.split()[0], gc.get_threshold()),
          flush=True)
    for name, fn in (("G1", g1), ("G2", g2), ("G3", g3), ("G4", g4)):
        if only and name != only:
            continue
        d = best(reps, lambda: fn(scale))
        print("RESULT workload=%s impl=cpython objects=%d objects_per_s=%.0f"
              % (name, scale, scale / d), flush=True)


if __name__ == "__main__":
    main()
