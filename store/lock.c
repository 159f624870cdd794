/*
 * lock.c -- the store's reader/writer lock (ARCHITECTURE §9).
 *
 * A write transaction holds it exclusively from begin to commit or abort, a
 * read transaction shared.  Built on a mutex and a condition variable rather
 * than pthread_rwlock_t, because:
 *
 *   K1 no thread owns it: a transaction may end on another thread than the
 *      one that began it (the API allows that);
 *   K2 writers go first: a waiting writer holds back new readers, so a
 *      stream of readers cannot starve it;
 *   K3 a thread that already reads the store may read it again (a nested
 *      read transaction, objstore_get_stats inside one) without waiting for
 *      a waiting writer, which would otherwise wait for it: a deadlock.
 *   K4 writers get the lock in the order they asked for it: each takes a
 *      ticket and waits for its turn.  A thread that lets the lock go and
 *      asks again at once (a loop of small transactions, objstore_verify in
 *      a loop) would otherwise take it back before the waiters it woke could
 *      run, and shut them out for as long as it kept asking.
 *
 * The writer's identity is an atomic word: the number of the thread that
 * began the write transaction, given to each thread at its first use and
 * never reused.  (Not the address of a thread-local: a thread started after
 * that one ended gets the same storage, and would be taken for the writer
 * of a transaction handed over to another thread.)
 */
#include "store_internal.h"

#include <stdatomic.h>

static _Atomic uintptr_t next_identity = 1;
static _Thread_local uintptr_t tl_identity;

static uintptr_t identity(void)
{
    if (!tl_identity)
        tl_identity = atomic_fetch_add(&next_identity, 1);
    return tl_identity;
}

/* Read locks this thread holds, per store (K3). */
#define NEST_SLOTS 8
static _Thread_local struct {
    const objstore *s;
    unsigned depth;
} tl_reads[NEST_SLOTS];

static unsigned *read_depth(const objstore *s, bool add)
{
    for (unsigned i = 0; i < NEST_SLOTS; i++)
        if (tl_reads[i].s == s)
            return &tl_reads[i].depth;
    if (add)
        for (unsigned i = 0; i < NEST_SLOTS; i++)
            if (!tl_reads[i].s) {
                tl_reads[i].s = s;
                tl_reads[i].depth = 0;
                return &tl_reads[i].depth;
            }
    return NULL;
}

void store_lock_init(store_lock *l)
{
    pthread_mutex_init(&l->m, NULL);
    pthread_cond_init(&l->c, NULL);
    l->readers = l->writers_waiting = 0;
    l->next_ticket = l->serving = 0;
    l->writer = false;
    atomic_store(&l->writer_id, 0);
}

void store_lock_destroy(store_lock *l)
{
    pthread_cond_destroy(&l->c);
    pthread_mutex_destroy(&l->m);
}

bool store_is_writer(const objstore *s)
{
    return atomic_load_explicit(&((objstore *)s)->lock.writer_id, memory_order_acquire) ==
           identity();
}

bool store_is_reader(const objstore *s)
{
    unsigned *depth = read_depth(s, false);
    return depth && *depth;
}

void store_read_begin(objstore *s)
{
    store_lock *l = &s->lock;
    unsigned *depth = read_depth(s, true);
    bool nested = depth && *depth > 0;
    pthread_mutex_lock(&l->m);
    while (l->writer || (l->writers_waiting && !nested))
        pthread_cond_wait(&l->c, &l->m);
    l->readers++;
    pthread_mutex_unlock(&l->m);
    if (depth)
        ++*depth;
    store_group_wait_durable(s);   /* G2 */
}

void store_read_end(objstore *s)
{
    store_lock *l = &s->lock;
    unsigned *depth = read_depth(s, false);
    if (depth && *depth && --*depth == 0) {
        for (unsigned i = 0; i < NEST_SLOTS; i++)
            if (tl_reads[i].s == s)
                tl_reads[i].s = NULL;
    }
    pthread_mutex_lock(&l->m);
    if (l->readers && --l->readers == 0)
        pthread_cond_broadcast(&l->c);
    pthread_mutex_unlock(&l->m);
}

void store_write_lock(objstore *s)
{
    store_lock *l = &s->lock;
    pthread_mutex_lock(&l->m);
    uint64_t ticket = l->next_ticket++;   /* K4 */
    l->writers_waiting++;
    while (l->writer || l->readers || l->serving != ticket)
        pthread_cond_wait(&l->c, &l->m);
    l->writers_waiting--;
    l->writer = true;
    pthread_mutex_unlock(&l->m);
    atomic_store_explicit(&l->writer_id, identity(), memory_order_release);
}

void store_write_unlock(objstore *s)
{
    store_lock *l = &s->lock;
    atomic_store_explicit(&l->writer_id, 0, memory_order_release);
    pthread_mutex_lock(&l->m);
    l->writer = false;
    l->serving++;   /* K4: the next ticket's turn */
    pthread_cond_broadcast(&l->c);
    pthread_mutex_unlock(&l->m);
}
