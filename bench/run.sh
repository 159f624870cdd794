#!/bin/sh
# run.sh -- runs every benchmark program of a build, then prints the ratios
# between objstore and its peers that their RESULT lines allow.
#
#   sh bench/run.sh BUILD_DIR        (`scons bench` passes build/release)
#
# Every executable BUILD_DIR/bench/bench_* runs, in name order, with its output
# shown as it comes; the whole run, summary included, is kept in
# BUILD_DIR/bench.log.  Temp files of the programs go under
# $OBJSTORE_BENCH_DIR, by default BUILD_DIR: a real disk, where an fsync costs
# what it costs (a tmpfs /tmp would make durability look free).
#
# A result is one line `RESULT key=value ...` (bench/bench_util.h, B4):
#   impl=...              the implementation measured;
#   *_per_s               a rate: higher is better;
#   *_s *_ms *_us *_ns *_bytes *_per_node *_per_object
#                         a time or a size: lower is better;
#   *_pct                 other measures (shown by the programs, not compared);
#   any other key         the configuration (workload=, order=, payload=,
#                         nodes=, ...), in any order.
# Lines with the same configuration are compared: for each measure, every impl
# whose name starts with "objstore" against every impl that does not.  The
# ratio is always "how many times better objstore is": objstore / peer for a
# rate, peer / objstore for a time or a size, so above 1 objstore is better
# whichever way the measure goes; the table names which division it made.
# TARGET lines are repeated at the end.
#
# Exits 1 if a program failed (the others still run) or none was found.
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: sh bench/run.sh BUILD_DIR" >&2
    exit 2
fi
build=$1
log=$build/bench.log
tmp=$(mktemp -d "${TMPDIR:-/tmp}/objstore-run.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: "${OBJSTORE_BENCH_DIR:=$build}"
export OBJSTORE_BENCH_DIR

out=$tmp/out
: > "$out"
say() {
    printf '%s\n' "$*" | tee -a "$out"
}

nprogs=0
failed=""
for prog in "$build"/bench/bench_*; do
    name=${prog##*/}
    case $name in *.*) continue ;; esac     # objects, sources, logs
    [ -f "$prog" ] && [ -x "$prog" ] || continue
    nprogs=$((nprogs + 1))
    say "==== $name"
    t0=$(date +%s)
    { "$prog" 2>&1; echo $? > "$tmp/rc"; } | tee -a "$out"
    rc=$(cat "$tmp/rc")
    t1=$(date +%s)
    if [ "$rc" -ne 0 ]; then
        failed="$failed $name"
        say "     ($name FAILED, exit $rc, $((t1 - t0)) s)"
    else
        say "     ($((t1 - t0)) s)"
    fi
done

if [ "$nprogs" -eq 0 ]; then
    say "run.sh: no benchmark programs in $build/bench (run scons first)"
    cp "$out" "$log"
    exit 1
fi

grep '^RESULT ' "$out" | awk '
function is_measure(k) {
    return k ~ /_(per_s|s|ms|us|ns|bytes|per_node|per_object|pct)$/
}
function compared(k) {
    return k ~ /_(per_s|s|ms|us|ns|bytes|per_node|per_object)$/
}
function higher_better(k) {
    return k ~ /_per_s$/
}
function human(v) {
    if (v >= 1e9) return sprintf("%.2fG", v / 1e9)
    if (v >= 1e6) return sprintf("%.2fM", v / 1e6)
    if (v >= 1e4) return sprintf("%.1fk", v / 1e3)
    return sprintf("%.4g", v)
}
{
    wl = "-"; impl = ""; nm = 0; nc = 0
    for (i = 2; i <= NF; i++) {
        eq = index($i, "=")
        if (eq == 0) continue
        k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
        if (k == "impl") impl = v
        else if (k == "workload") wl = v
        else if (is_measure(k)) { nm++; mk[nm] = k; mv[nm] = v }
        else {
            # configuration keys sorted, so that programs may order them freely
            for (j = nc; j > 0 && ck[j] > $i; j--) ck[j + 1] = ck[j]
            ck[j + 1] = $i; nc++
        }
    }
    if (impl == "") next
    cfg = ""
    for (j = 1; j <= nc; j++) cfg = cfg (j > 1 ? " " : "") ck[j]
    if (cfg == "") cfg = "-"
    g = wl SUBSEP cfg
    if (!(g in gseen)) { gseen[g] = 1; ng++; gwl[ng] = wl; gcfg[ng] = cfg }
    if (!((g, impl) in iseen)) { iseen[g, impl] = 1; ni[g]++; imp[g, ni[g]] = impl }
    for (j = 1; j <= nm; j++) {
        if (!compared(mk[j])) continue
        if (!((g, mk[j]) in mseen)) {
            mseen[g, mk[j]] = 1; nmet[g]++; met[g, nmet[g]] = mk[j]
        }
        if ((g, impl, mk[j]) in val)
            dup[wl " " cfg " impl=" impl " " mk[j]] = 1
        val[g, impl, mk[j]] = mv[j] + 0
    }
}
END {
    n = 0
    for (x = 1; x <= ng; x++) {
        g = gwl[x] SUBSEP gcfg[x]
        for (m = 1; m <= nmet[g]; m++) {
            mt = met[g, m]
            for (a = 1; a <= ni[g]; a++) {
                A = imp[g, a]
                if (A !~ /^objstore/ || !((g, A, mt) in val)) continue
                for (b = 1; b <= ni[g]; b++) {
                    B = imp[g, b]
                    if (B ~ /^objstore/ || !((g, B, mt) in val))
                        continue
                    va = val[g, A, mt]; vb = val[g, B, mt]
                    if (va <= 0 || vb <= 0)
                        continue
                    n++
                    row[n, 1] = gwl[x]; row[n, 2] = gcfg[x]
                    row[n, 3] = mt (higher_better(mt) ? " (higher is better)" \
                                                      : " (lower is better)")
                    row[n, 4] = A; row[n, 5] = human(va)
                    row[n, 6] = B; row[n, 7] = human(vb)
                    if (higher_better(mt)) {
                        row[n, 8] = sprintf("%.2fx", va / vb)
                        row[n, 9] = "objstore/peer"
                    } else {
                        row[n, 8] = sprintf("%.2fx", vb / va)
                        row[n, 9] = "peer/objstore"
                    }
                }
            }
        }
    }
    print ""
    print "ratios: how many times better objstore is than the peer (above 1:"
    print "objstore is better; rates are objstore/peer, times and sizes peer/objstore)"
    if (n == 0) { print "  (no pair of objstore and peer results to compare)"; exit }
    split("workload|config|metric|objstore|value|peer|value|ratio|ratio is", hd, "|")
    for (c = 1; c <= 9; c++) w[c] = length(hd[c])
    for (r = 1; r <= n; r++)
        for (c = 1; c <= 9; c++)
            if (length(row[r, c]) > w[c]) w[c] = length(row[r, c])
    line = ""
    for (c = 1; c <= 9; c++) line = line sprintf("  %-" w[c] "s", hd[c])
    sub(/ +$/, "", line)
    print line
    for (r = 1; r <= n; r++) {
        line = ""
        for (c = 1; c <= 9; c++) {
            # numbers right-aligned, names left-aligned
            f = (c == 5 || c == 7 || c == 8) ? "  %" w[c] "s" : "  %-" w[c] "s"
            line = line sprintf(f, row[r, c])
        }
        sub(/ +$/, "", line)
        print line
    }
    for (d in dup)
        print "  note: " d " was reported more than once; the last value is used"
}' | tee -a "$out"

if grep -q '^TARGET ' "$out"; then
    say ""
    say "targets"
    grep '^TARGET ' "$out" | sed 's/^TARGET /  /' | tee -a "$out"
fi

if [ -n "$failed" ]; then
    say ""
    say "benchmarks failed:$failed"
fi
cp "$out" "$log"
[ -z "$failed" ]
