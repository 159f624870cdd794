#!/usr/bin/env python3
"""Runs every Check suite given on the command line (programs named test_*),
prints their output as it comes, then a total.  Exits 1 if any suite failed.

Under ThreadSanitizer (OBJSTORE_TSAN set by `scons tsan=1 test`) a race
report ends the process that made it with exit code 66, so the test (Check
runs each in a child) or the suite fails; TSAN_OPTIONS given by the caller
come after these and win.  Every suite runs under it, the crash suite's
fork + kill -9 included."""
import os, re, subprocess, sys, time

if os.environ.get('OBJSTORE_TSAN'):
    os.environ['TSAN_OPTIONS'] = ('halt_on_error=1 exitcode=66 second_deadlock_stack=1 ' +
                                  os.environ.get('TSAN_OPTIONS', '')).strip()
progs = [p for p in sys.argv[1:] if os.path.basename(p).startswith('test_')]
passed = failed = 0
bad = []
for prog in progs:
    t0 = time.time()
    print('==== %s' % os.path.basename(prog), flush=True)
    r = subprocess.run([prog], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors='replace')
    sys.stdout.write(r.stdout)
    m = None
    for m in re.finditer(r'(\d+)%: Checks: (\d+), Failures: (\d+), Errors: (\d+)', r.stdout):
        checks, fails, errs = int(m.group(2)), int(m.group(3)), int(m.group(4))
        passed += checks - fails - errs
        failed += fails + errs
    if r.returncode != 0 or m is None:
        bad.append(os.path.basename(prog))
        if m is None:
            failed += 1
            print('%s: no Check summary (exit %d)' % (prog, r.returncode))
    print('     (%.1f s)' % (time.time() - t0), flush=True)

print('suites failed: %s' % (', '.join(bad) if bad else 'none'))
print('%d passed, %d failed' % (passed, failed))
sys.exit(1 if bad else 0)
