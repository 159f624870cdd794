/*
 * test_threads.c -- the Check suite of threads: one store handle used by
 * several threads at once (ARCHITECTURE.md §9), written against objstore.h
 * and objstore_admin.h.  Built with `scons tsan=1` it runs under
 * ThreadSanitizer, and a race report fails it (tests/run_tests.py sets
 * TSAN_OPTIONS); in the other builds it checks the same behaviour.
 *
 * What a program may rely on, and these tests check:
 *   - read transactions beside a writer see only committed states, never a
 *     transaction half-applied, and never an older state than one they saw;
 *   - pins taken and dropped by readers in different threads keep an object
 *     alive at count 0 until the last pin goes, and the count stays exact;
 *   - objstore_collect, commits, statistics and verify from different
 *     threads serialize: garbage cycles made by one thread are freed by
 *     another's collections, and the store verifies clean after;
 *   - a transaction may end on another thread than the one that began it,
 *     and a thread started later is not taken for its owner;
 *   - different stores opened and closed by different threads at once stay
 *     apart;
 *   - readers that reach at once arenas open did not check (a large heap)
 *     share that check;
 *   - writers get the write lock in the order they asked for it: a thread
 *     that writes back to back does not shut the others out.
 * Threads report a failure through a flag (Check's assertions belong to the
 * test's own thread).
 */
#include "test_store.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>

#define NREADERS 3

static int rounds(int n)
{
    return ts_under_sanitizer() ? n / 4 : n;
}

/* A failure seen by a thread: the first message is kept. */
static pthread_mutex_t g_fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_fail[512];
static atomic_bool g_failed;

static void thread_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void thread_fail(const char *fmt, ...)
{
    pthread_mutex_lock(&g_fail_lock);
    if (!atomic_load(&g_failed)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_fail, sizeof g_fail, fmt, ap);
        va_end(ap);
        atomic_store(&g_failed, true);
    }
    pthread_mutex_unlock(&g_fail_lock);
}

#define T_OK(expr)                                                              \
    do {                                                                        \
        int t_rc_ = (expr);                                                     \
        if (t_rc_ != OBJSTORE_OK) {                                             \
            thread_fail("%s:%d: %s = %d: %s", __FILE__, __LINE__, #expr, t_rc_, \
                        objstore_errmsg());                                     \
            goto out;                                                           \
        }                                                                       \
    } while (0)

#define T_CHECK(cond, ...)              \
    do {                                \
        if (!(cond)) {                  \
            thread_fail(__VA_ARGS__);   \
            goto out;                   \
        }                               \
    } while (0)

static void threads_setup(void)
{
    atomic_store(&g_failed, false);
    g_fail[0] = '\0';
}

static void no_thread_failed(void)
{
    ck_assert_msg(!atomic_load(&g_failed), "%s", g_fail);
}

static void start(pthread_t *th, void *(*fn)(void *), void *arg)
{
    ck_assert_int_eq(pthread_create(th, NULL, fn, arg), 0);
}

static void join(pthread_t th)
{
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}

/* ------------------------------------------------------------------ */
/* readers beside a writer                                              */

/* The root "pair" names an object whose payload holds two equal words, and
 * whose slot holds a chain of CHAIN small objects holding the same word.  The
 * writer changes them all in separate writes, and now and then replaces the
 * pair and its chain (the commit frees the old ones), so a reader that saw a
 * transaction half-way would find different words, or an object freed under
 * it.  Readers walk the chain with get_ref and get: the read path's record
 * of sound objects is shared by concurrent readers. */
#define CHAIN 40

struct shared {
    objstore *s;
    int commits;
    atomic_int writer_done;
};

static int new_pair(objstore_txn *t, objstore_oid *pair)
{
    objstore_oid next = 0, n;
    int rc;
    for (int k = 0; k < CHAIN; k++) {
        if ((rc = objstore_new(t, 0, 1, 8, &n)) || (rc = objstore_set_ref(t, n, 0, next)))
            return rc;
        next = n;
    }
    if ((rc = objstore_new(t, 0, 1, 16, pair)) || (rc = objstore_set_ref(t, *pair, 0, next)))
        return rc;
    return objstore_root_set(t, "pair", *pair);
}

static int write_pair(objstore_txn *t, objstore_oid o, uint64_t v)
{
    int rc;
    if ((rc = objstore_write(t, o, 0, &v, 8)))
        return rc;
    for (objstore_oid n = o; !rc;) {
        if ((rc = objstore_get_ref(t, n, 0, &n)) || !n)
            break;
        rc = objstore_write(t, n, 0, &v, 8);
    }
    return rc ? rc : objstore_write(t, o, 8, &v, 8);
}

static void *pair_writer(void *arg)
{
    struct shared *sh = arg;
    for (int i = 1; i <= sh->commits && !atomic_load(&g_failed); i++) {
        objstore_txn *t;
        T_OK(objstore_begin(sh->s, 0, &t));
        objstore_oid o;
        int rc = objstore_root_get(t, "pair", &o);
        if (!rc && i % 5 == 1)
            rc = new_pair(t, &o);   /* the old pair and chain are freed */
        if (!rc)
            rc = write_pair(t, o, (uint64_t)i);
        if (rc) {
            objstore_abort(t);
            T_OK(rc);
        }
        T_OK(objstore_commit(t));
    }
out:
    atomic_store(&sh->writer_done, 1);
    return NULL;
}

/* Reads the pair and its chain; 0 or a status. */
static int read_pair(objstore_txn *t, uint64_t w[2], int *len, bool *same)
{
    objstore_oid o;
    const void *p;
    uint64_t size;
    int rc;
    if ((rc = objstore_root_get(t, "pair", &o)) || (rc = objstore_get(t, o, &p, &size)))
        return rc;
    if (size != 16)
        return OBJSTORE_ECORRUPT;
    memcpy(w, p, 16);
    *len = 0;
    *same = true;
    for (objstore_oid n = o;;) {
        if ((rc = objstore_get_ref(t, n, 0, &n)))
            return rc;
        if (!n)
            return OBJSTORE_OK;
        uint64_t v;
        if ((rc = objstore_get(t, n, &p, &size)))
            return rc;
        memcpy(&v, p, 8);
        *same = *same && v == w[0];
        ++*len;
    }
}

static void *pair_reader(void *arg)
{
    struct shared *sh = arg;
    uint64_t last = 0;
    unsigned reads = 0;
    while ((!atomic_load(&sh->writer_done) || reads < 10) && !atomic_load(&g_failed)) {
        objstore_txn *t;
        T_OK(objstore_begin(sh->s, OBJSTORE_TXN_RDONLY, &t));
        uint64_t w[2];
        int len;
        bool same;
        int rc = read_pair(t, w, &len, &same);
        objstore_commit(t);   /* ends a read transaction */
        T_OK(rc);
        T_CHECK(w[0] == w[1] && same, "a half-applied transaction: %llu, %llu, chain %s",
                U(w[0]), U(w[1]), same ? "same" : "differs");
        T_CHECK(len == (w[0] ? CHAIN : 0), "chain of %d objects at %llu", len, U(w[0]));
        T_CHECK(w[0] >= last, "went back in time: %llu after %llu", U(w[0]), U(last));
        last = w[0];
        reads++;
    }
out:
    return NULL;
}

START_TEST(test_readers_beside_a_writer_see_only_whole_committed_states)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "pair", new_obj(t, 0, 1, 16));
    commit(t);

    struct shared sh = {.s = s, .commits = rounds(400)};
    pthread_t w, r[NREADERS];
    for (int i = 0; i < NREADERS; i++)
        start(&r[i], pair_reader, &sh);
    start(&w, pair_writer, &sh);
    join(w);
    for (int i = 0; i < NREADERS; i++)
        join(r[i]);
    no_thread_failed();

    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "pair"), 0), (uint64_t)sh.commits);
    commit(t);
    verify_clean(s);
    s = reopen(s, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "pair"), 8), (uint64_t)sh.commits);
    commit(t);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* pins from many threads                                               */

struct pins {
    objstore *s;
    objstore_oid target;   /* at count 0, kept by pins */
    int rounds;
    atomic_int started;
    atomic_int writer_done;
};

/* Each reader pins the target in a read transaction and keeps that pin
 * until the writer is done; meanwhile it pins and unpins it again and again.
 * The target must stay alive across the writer's commits. */
static void *pin_reader(void *arg)
{
    struct pins *p = arg;
    objstore_txn *t;
    T_OK(objstore_begin(p->s, OBJSTORE_TXN_RDONLY, &t));
    int rc = objstore_pin(t, p->target);
    objstore_commit(t);
    T_OK(rc);
    atomic_fetch_add(&p->started, 1);
    for (int i = 0; i < p->rounds && !atomic_load(&g_failed); i++) {
        T_OK(objstore_begin(p->s, OBJSTORE_TXN_RDONLY, &t));
        objstore_objinfo info;
        rc = objstore_info(t, p->target, &info);
        if (!rc)
            rc = objstore_pin(t, p->target);
        if (!rc)
            rc = objstore_unpin(t, p->target);
        objstore_commit(t);
        T_OK(rc);
        T_CHECK(info.refcount == 0, "pinned target has count %llu", U(info.refcount));
    }
    while (!atomic_load(&p->writer_done) && !atomic_load(&g_failed))
        sched_yield();
    T_OK(objstore_begin(p->s, OBJSTORE_TXN_RDONLY, &t));
    rc = objstore_unpin(t, p->target);
    objstore_commit(t);
    T_OK(rc);
out:
    return NULL;
}

static void *pin_writer(void *arg)
{
    struct pins *p = arg;
    while (atomic_load(&p->started) < NREADERS && !atomic_load(&g_failed))
        sched_yield();
    for (int i = 0; i < p->rounds && !atomic_load(&g_failed); i++) {
        objstore_txn *t;
        T_OK(objstore_begin(p->s, 0, &t));
        /* Garbage each round: the commit drains the zero-count table,
         * where the pinned target waits too. */
        objstore_oid junk;
        int rc = objstore_new(t, 0, 0, 32, &junk);
        if (rc) {
            objstore_abort(t);
            T_OK(rc);
        }
        T_OK(objstore_commit(t));
    }
out:
    atomic_store(&p->writer_done, 1);
    return NULL;
}

START_TEST(test_pins_from_reader_threads_keep_an_object_at_count_zero_alive)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    objstore_oid target = new_obj(t, 0, 0, 64);
    put_u64(t, target, 0, 42);
    OK(objstore_pin(t, target));
    commit(t);   /* at count 0, kept by the pin */

    struct pins p = {.s = s, .target = target, .rounds = rounds(300)};
    pthread_t w, r[NREADERS];
    for (int i = 0; i < NREADERS; i++)
        start(&r[i], pin_reader, &p);
    /* The first pin can go once the readers hold theirs. */
    while (atomic_load(&p.started) < NREADERS && !atomic_load(&g_failed))
        sched_yield();
    t = wbegin(s);
    OK(objstore_unpin(t, target));
    commit(t);
    start(&w, pin_writer, &p);
    join(w);
    for (int i = 0; i < NREADERS; i++)
        join(r[i]);
    no_thread_failed();

    /* Every pin is gone: the next commit frees the target. */
    t = wbegin(s);
    ck_assert(is_live(t, target));
    ck_assert_uint_eq(get_u64(t, target, 0), 42);
    commit(t);
    t = rbegin(s);
    ck_assert(!is_live(t, target));
    commit(t);
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* collect, commits, stats and verify from different threads            */

struct mixed {
    objstore *s;
    int rounds;
    atomic_int makers_done;
};

struct maker {
    struct mixed *m;
    const char *ring;   /* its root for the ring of the moment */
};

/* Makes garbage rings of 3 and a live list (shared) that grows. */
static void *ring_maker(void *arg)
{
    struct maker *mk = arg;
    struct mixed *m = mk->m;
    for (int i = 0; i < m->rounds && !atomic_load(&g_failed); i++) {
        objstore_txn *t;
        T_OK(objstore_begin(m->s, 0, &t));
        objstore_oid r[3], head = 0, cell;
        int rc = 0;
        for (int k = 0; k < 3 && !rc; k++)
            rc = objstore_new(t, 0, 1, 24, &r[k]);
        for (int k = 0; k < 3 && !rc; k++)
            rc = objstore_set_ref(t, r[k], 0, r[(k + 1) % 3]);
        if (!rc)   /* held by a root for one commit, dropped by the next */
            rc = objstore_root_set(t, mk->ring, r[0]);
        if (!rc && (rc = objstore_root_get(t, "list", &head)) == OBJSTORE_ENOTFOUND)
            rc = OBJSTORE_OK, head = 0;
        if (!rc && !(rc = objstore_new(t, 0, 1, 8, &cell)) &&
            !(rc = objstore_set_ref(t, cell, 0, head)))
            rc = objstore_root_set(t, "list", cell);
        if (rc) {
            objstore_abort(t);
            T_OK(rc);
        }
        T_OK(objstore_commit(t));
        T_OK(objstore_begin(m->s, 0, &t));
        rc = objstore_root_del(t, mk->ring);
        if (rc) {
            objstore_abort(t);
            T_OK(rc);
        }
        T_OK(objstore_commit(t));
    }
out:
    atomic_fetch_add(&m->makers_done, 1);
    return NULL;
}

static void *collector(void *arg)
{
    struct mixed *m = arg;
    while (atomic_load(&m->makers_done) < 2 && !atomic_load(&g_failed)) {
        objstore_collect_stats cs;
        T_OK(objstore_collect(m->s, &cs));
        objstore_stats st;
        T_OK(objstore_get_stats(m->s, &st));
        sched_yield();
    }
out:
    return NULL;
}

static void *inspector(void *arg)
{
    struct mixed *m = arg;
    int n = 0;
    while (atomic_load(&m->makers_done) < 2 && !atomic_load(&g_failed)) {
        objstore_stats st;
        T_OK(objstore_get_stats(m->s, &st));
        T_CHECK(st.live_objects >= st.roots, "%llu objects, %llu roots",
                U(st.live_objects), U(st.roots));
        if (n++ % 8 == 0) {
            objstore_verify_report r;
            T_OK(objstore_verify(m->s, &r));
            T_CHECK(r.total_problems == 0, "verify: %s", r.first_problem);
        }
        sched_yield();
    }
out:
    return NULL;
}

START_TEST(test_collect_commits_stats_and_verify_from_different_threads_serialize)
{
    objstore_options o = {.gc_threshold = UINT64_MAX};   /* only objstore_collect */
    objstore *s = new_store(&o);
    struct mixed m = {.s = s, .rounds = rounds(120)};
    struct maker makers[2] = {{&m, "ring0"}, {&m, "ring1"}};
    pthread_t mk[2], c, in;
    start(&mk[0], ring_maker, &makers[0]);
    start(&mk[1], ring_maker, &makers[1]);
    start(&c, collector, &m);
    start(&in, inspector, &m);
    for (int i = 0; i < 2; i++)
        join(mk[i]);
    join(c);
    join(in);
    no_thread_failed();

    objstore_collect_stats cs;
    do
        OK(objstore_collect(s, &cs));
    while (cs.incomplete);
    objstore_verify_report r = verify_clean(s);
    /* What is left: the list, one cell per round of each maker. */
    ck_assert_uint_eq(r.objects, 2 * (uint64_t)m.rounds);
    ck_assert_uint_eq(r.unreachable, 0);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* transactions ended on another thread                                 */

struct handoff {
    objstore_txn *t;
    bool abort;
};

static void *end_txn(void *arg)
{
    struct handoff *h = arg;
    if (h->abort)
        objstore_abort(h->t);
    else
        T_OK(objstore_commit(h->t));
out:
    return NULL;
}

static void end_on_thread(objstore_txn *t, bool abort)
{
    struct handoff h = {.t = t, .abort = abort};
    pthread_t th;
    start(&th, end_txn, &h);
    join(th);
    no_thread_failed();
}

struct begin_arg {
    objstore *s;
    int flags;
    objstore_txn *t;
    int rc;
};

static void *begin_txn(void *arg)
{
    struct begin_arg *b = arg;
    b->rc = objstore_begin(b->s, b->flags, &b->t);
    return NULL;
}

static objstore_txn *begin_on_thread(objstore *s, int flags)
{
    struct begin_arg b = {.s = s, .flags = flags};
    pthread_t th;
    start(&th, begin_txn, &b);
    join(th);
    ck_assert_msg(b.rc == OBJSTORE_OK, "begin on a thread: %d", b.rc);
    return b.t;
}

START_TEST(test_a_transaction_may_end_on_another_thread_than_began_it)
{
    objstore *s = new_store(NULL);

    /* Begun here, committed there. */
    objstore_txn *t = wbegin(s);
    objstore_oid a = new_obj(t, 0, 0, 8);
    put_u64(t, a, 0, 7);
    root_set(t, "a", a);
    end_on_thread(t, false);

    /* Begun there, committed here: the lock follows the transaction. */
    t = begin_on_thread(s, 0);
    objstore_oid b = new_obj(t, 0, 0, 8);
    root_set(t, "b", b);
    commit(t);

    /* Begun here, aborted there; a read begun there, ended here. */
    t = wbegin(s);
    root_set(t, "c", new_obj(t, 0, 0, 8));
    end_on_thread(t, true);
    t = begin_on_thread(s, OBJSTORE_TXN_RDONLY);
    ck_assert_uint_eq(get_u64(t, root_get(t, "a"), 0), 7);
    commit(t);

    /* Nothing is left held: a writer gets in. */
    t = wbegin(s);
    objstore_oid c;
    EXPECT(OBJSTORE_ENOTFOUND, objstore_root_get(t, "c", &c));
    commit(t);
    verify_clean(s);
    s = reopen(s, NULL);
    t = rbegin(s);
    ck_assert_uint_eq(get_u64(t, root_get(t, "a"), 0), 7);
    ck_assert(root_get(t, "b") != 0);
    commit(t);
    close_store(s);
}
END_TEST

/* A thread that begins while a transaction handed over by an ended thread
 * is open waits for it: it is not taken for that transaction's owner. */
START_TEST(test_a_new_thread_waits_for_a_write_transaction_its_ended_starter_began)
{
    objstore *s = new_store(NULL);
    for (int round = 0; round < 20; round++) {
        objstore_txn *t = begin_on_thread(s, 0);   /* that thread has ended */
        struct begin_arg b = {.s = s, .flags = round % 2 ? OBJSTORE_TXN_RDONLY : 0};
        pthread_t th;
        start(&th, begin_txn, &b);
        /* It should be waiting now; if it is not, it saw no writer. */
        sched_yield();
        root_set(t, "r", new_obj(t, 0, 0, 8));
        commit(t);
        join(th);
        ck_assert_msg(b.rc == OBJSTORE_OK, "round %d: a new thread's begin = %d: %s", round,
                      b.rc, objstore_strerror(b.rc));
        commit(b.t);
    }
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* writers in turn                                                      */

/* A thread that ends a write transaction and at once begins the next does
 * not take the lock back ahead of the writers already waiting for it: they
 * get it in the order they asked, then it does.  (A lock that let it would
 * shut the waiters out for as long as the first thread kept asking:
 * objstore_verify in a loop beside committing threads did that.) */
#define TURN_WAITERS 3

struct next_writer {
    objstore *s;
    atomic_int asking;
    atomic_int *order;   /* the next turn's number */
    int turn;            /* the turn this writer got */
};

static void *next_writer(void *arg)
{
    struct next_writer *n = arg;
    objstore_txn *t;
    atomic_store(&n->asking, 1);
    T_OK(objstore_begin(n->s, 0, &t));
    n->turn = atomic_fetch_add(n->order, 1);
    objstore_abort(t);
out:
    return NULL;
}

START_TEST(test_writers_get_the_write_lock_in_the_order_they_asked)
{
    objstore *s = new_store(NULL);
    for (int round = 0; round < 10; round++) {
        atomic_int order = 0;
        objstore_txn *t = wbegin(s);
        struct next_writer n[TURN_WAITERS];
        pthread_t th[TURN_WAITERS];
        for (int i = 0; i < TURN_WAITERS; i++) {   /* each asks after the one before */
            n[i] = (struct next_writer){.s = s, .order = &order, .turn = -1};
            start(&th[i], next_writer, &n[i]);
            while (!atomic_load(&n[i].asking))
                sched_yield();
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);   /* it waits now */
        }
        objstore_abort(t);
        t = wbegin(s);   /* asks again at once */
        int mine = atomic_fetch_add(&order, 1);
        objstore_abort(t);
        for (int i = 0; i < TURN_WAITERS; i++)
            join(th[i]);
        no_thread_failed();
        for (int i = 0; i < TURN_WAITERS; i++)
            ck_assert_msg(n[i].turn == i, "round %d: the writer that asked #%d got turn %d",
                          round, i + 1, n[i].turn);
        ck_assert_msg(mine == TURN_WAITERS, "round %d: the writer that let the lock go and "
                      "asked again got turn %d, ahead of writers waiting", round, mine);
    }
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the lazy check of arenas open did not look at                        */

/* Open checks the first arenas only; the rest are checked when first
 * reached, which concurrent readers may do at once. */
#define BIG (UINT64_C(40) << 20)
static const char *const g_bigs[] = {"a", "b", "c"};

struct bigread {
    objstore *s;
    int first;   /* which root to reach first */
};

static void *big_reader(void *arg)
{
    struct bigread *b = arg;
    objstore_txn *t;
    T_OK(objstore_begin(b->s, OBJSTORE_TXN_RDONLY, &t));
    int rc = 0;
    for (int k = 0; k < 3 && !rc; k++) {
        int i = (b->first + k) % 3;
        objstore_oid o;
        const void *p;
        uint64_t size, v = 0;
        if (!(rc = objstore_root_get(t, g_bigs[i], &o)) &&
            !(rc = objstore_get(t, o, &p, &size))) {
            memcpy(&v, (const uint8_t *)p + size - 8, 8);
            if (size != BIG || v != (uint64_t)i + 1)
                rc = OBJSTORE_ECORRUPT;
        }
    }
    objstore_commit(t);
    T_OK(rc);
out:
    return NULL;
}

START_TEST(test_readers_reaching_unchecked_arenas_at_once_check_them_once)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    for (int i = 0; i < 3; i++) {
        objstore_oid o = new_obj(t, 0, 0, BIG);
        put_u64(t, o, BIG - 8, (uint64_t)i + 1);
        root_set(t, g_bigs[i], o);
    }
    commit(t);
    for (int round = 0; round < 3; round++) {
        s = reopen(s, NULL);   /* the arenas past the first are unchecked */
        struct bigread b[NREADERS];
        pthread_t th[NREADERS];
        for (int i = 0; i < NREADERS; i++) {
            b[i] = (struct bigread){.s = s, .first = (i + round) % 3};
            start(&th[i], big_reader, &b[i]);
        }
        for (int i = 0; i < NREADERS; i++)
            join(th[i]);
        no_thread_failed();
    }
    verify_clean(s);
    close_store(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* stores opened and closed by different threads at once               */

struct own_store {
    char *dir;
    int rounds;
};

static void *open_use_close(void *arg)
{
    struct own_store *o = arg;
    T_OK(objstore_create(o->dir, NULL));
    for (int i = 0; i < o->rounds && !atomic_load(&g_failed); i++) {
        objstore *s;
        T_OK(objstore_open(o->dir, NULL, &s));
        objstore_txn *t;
        int rc = objstore_begin(s, 0, &t);
        objstore_oid x;
        if (!rc && !(rc = objstore_new(t, 0, 0, 8, &x)) &&
            !(rc = objstore_write(t, x, 0, &i, sizeof i)))
            rc = objstore_root_set(t, "x", x);
        if (!rc)
            rc = objstore_commit(t);
        else if (t)
            objstore_abort(t);
        int crc = objstore_close(s);
        T_OK(rc);
        T_OK(crc);
    }
out:
    return NULL;
}

START_TEST(test_stores_opened_and_closed_by_different_threads_at_once_stay_apart)
{
    enum { N = 3 };
    struct own_store o[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        o[i] = (struct own_store){.dir = ts_path(g_dir, name), .rounds = rounds(20)};
        start(&th[i], open_use_close, &o[i]);
    }
    for (int i = 0; i < N; i++)
        join(th[i]);
    no_thread_failed();
    for (int i = 0; i < N; i++) {
        objstore *s = open_store(o[i].dir, NULL);
        objstore_txn *t = rbegin(s);
        const void *p;
        uint64_t size;
        OK(objstore_get(t, root_get(t, "x"), &p, &size));
        int v;
        memcpy(&v, p, sizeof v);
        ck_assert_int_eq(v, o[i].rounds - 1);
        commit(t);
        verify_clean(s);
        close_store(s);
        free(o[i].dir);
    }
}
END_TEST

static Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = ts_tcase(s, "threads", 300);
    tcase_add_checked_fixture(tc, threads_setup, NULL);
    tcase_add_test(tc, test_readers_beside_a_writer_see_only_whole_committed_states);
    tcase_add_test(tc, test_pins_from_reader_threads_keep_an_object_at_count_zero_alive);
    tcase_add_test(tc, test_collect_commits_stats_and_verify_from_different_threads_serialize);
    tcase_add_test(tc, test_a_transaction_may_end_on_another_thread_than_began_it);
    tcase_add_test(tc, test_a_new_thread_waits_for_a_write_transaction_its_ended_starter_began);
    tcase_add_test(tc, test_stores_opened_and_closed_by_different_threads_at_once_stay_apart);
    tcase_add_test(tc, test_readers_reaching_unchecked_arenas_at_once_check_them_once);
    tcase_add_test(tc, test_writers_get_the_write_lock_in_the_order_they_asked);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(threads_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
