/*
 * quickstart.c -- the example program of docs/API.md: a persistent counter
 * and a linked list of notes, kept across runs.
 *
 *   build/release/examples/quickstart STORE-DIR [NOTE]
 *
 * Each run opens (or creates) the store, bumps the counter, appends NOTE (or
 * "run N") to the list, and prints the whole list.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "objstore.h"

static int fail(const char *what, int rc)
{
    fprintf(stderr, "quickstart: %s: %s: %s\n", what, objstore_strerror(rc),
            objstore_errmsg());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s STORE-DIR [NOTE]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];

    /* Open the store, creating it on the first run. */
    objstore *s;
    int rc = objstore_open(dir, NULL, &s);
    if (rc == OBJSTORE_ENOENT || rc == OBJSTORE_EMETA) {
        if ((rc = objstore_create(dir, NULL)))
            return fail("create", rc);
        rc = objstore_open(dir, NULL, &s);
    }
    if (rc)
        return fail("open", rc);

    /* One write transaction: everything in it commits together, or not. */
    objstore_txn *t;
    if ((rc = objstore_begin(s, 0, &t)))
        return fail("begin", rc);

    uint32_t note_type;
    objstore_oid counter, head = 0, note;
    if ((rc = objstore_type_register(t, "note", &note_type)))
        goto abort;

    /* The counter: an object with no slots and an 8-byte payload. */
    rc = objstore_root_get(t, "counter", &counter);
    if (rc == OBJSTORE_ENOTFOUND) {
        if ((rc = objstore_new(t, 0, 0, sizeof(uint64_t), &counter)) ||
            (rc = objstore_root_set(t, "counter", counter)))   /* a root keeps it alive */
            goto abort;
    } else if (rc) {
        goto abort;
    }
    uint64_t *n;
    if ((rc = objstore_edit(t, counter, (void **)&n, NULL)))   /* marks it dirty */
        goto abort;
    ++*n;

    /* A new note, its slot 0 pointing at the previous head of the list. */
    char text[128];
    snprintf(text, sizeof text, "%s", argc > 2 ? argv[2] : "");
    if (!text[0])
        snprintf(text, sizeof text, "run %" PRIu64, *n);
    if ((rc = objstore_new(t, note_type, 1, strlen(text) + 1, &note)) ||
        (rc = objstore_write(t, note, 0, text, strlen(text) + 1)))
        goto abort;
    rc = objstore_root_get(t, "notes", &head);
    if (rc && rc != OBJSTORE_ENOTFOUND)
        goto abort;
    if ((head && (rc = objstore_set_ref(t, note, 0, head))) ||
        (rc = objstore_root_set(t, "notes", note)))   /* the old head's count: 2 -> 1 */
        goto abort;

    if ((rc = objstore_commit(t)))   /* durable when it returns OBJSTORE_OK */
        return fail("commit", rc);

    /* Read it back in a read transaction. */
    if ((rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t)))
        return fail("begin", rc);
    if ((rc = objstore_root_get(t, "notes", &note)))
        goto abort;
    while (note) {
        const void *p;
        uint64_t refs;
        if ((rc = objstore_get(t, note, &p, NULL)) ||
            (rc = objstore_getrefcount(t, note, &refs)) ||
            (rc = objstore_get_ref(t, note, 0, &note)))
            goto abort;
        printf("%s (count %" PRIu64 ")\n", (const char *)p, refs);
    }
    objstore_commit(t);   /* ends a read transaction */
    if ((rc = objstore_close(s)))
        return fail("close", rc);
    return 0;

abort:
    objstore_abort(t);   /* nothing of this transaction reaches the store */
    fail("transaction", rc);
    objstore_close(s);
    return 1;
}
