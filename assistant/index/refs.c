// A file's references as the index stores them: one row per name and kind, with every place it is used written
// "line:col line:col ..." in source order. Grouped here so that no Python runs per place (a file has ~4 places per
// row); parse.group_references is the same grouping for tree-sitter's references, and the tests hold them equal.
#include <stdlib.h>
#include <string.h>

#include "scan.h"

typedef struct { const uint8_t *name; int32_t len; const Ref *ref; } Key;

static int same_name(const Key *x, const Key *y) {
    return x->len == y->len && memcmp(x->name, y->name, x->len) == 0;
}

// Python's order of (name, kind, line, col) tuples: a str compares as its UTF-8 bytes do
static int compare(const void *a, const void *b) {
    const Key *x = a, *y = b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    if (c) return c;
    if (x->len != y->len) return x->len - y->len;
    if (x->ref->kind != y->ref->kind) return x->ref->kind - y->ref->kind;
    if (x->ref->line != y->ref->line) return x->ref->line < y->ref->line ? -1 : 1;
    return x->ref->col < y->ref->col ? -1 : x->ref->col > y->ref->col;
}

static int write_int(char *out, int32_t value) {   // snprintf's digits at a fraction of its cost
    char digits[12];
    uint32_t u = value < 0 ? -(uint32_t)value : (uint32_t)value;
    int n = 0, k = 0;
    do digits[n++] = (char)('0' + u % 10); while (u /= 10);
    if (value < 0) out[k++] = '-';
    while (n) out[k++] = digits[--n];
    return k;
}

// refs: n references of src (no imports); text: room for REF_PLACE_BYTES per reference; groups: 3 int32
// per group (its first reference's index, its places' start and end in text). The number of groups, -1 without
// memory.
int group_refs(const uint8_t *src, const Ref *refs, int32_t n, char *text, int32_t *groups) {
    Key *keys = malloc(sizeof(Key) * (n > 0 ? n : 1));
    if (!keys) return -1;
    for (int i = 0; i < n; i++) keys[i] = (Key){src + refs[i].start, refs[i].end - refs[i].start, &refs[i]};
    qsort(keys, n, sizeof(Key), compare);
    int count = 0, at = 0;
    for (int i = 0; i < n; i++) {
        const Ref *r = keys[i].ref;
        if (i > 0 && keys[i - 1].ref->kind == r->kind && same_name(&keys[i - 1], &keys[i])) {
            text[at++] = ' ';
        } else {
            if (count) groups[3 * count - 1] = at;
            groups[3 * count] = (int32_t)(r - refs); groups[3 * count + 1] = at;
            count++;
        }
        at += write_int(text + at, r->line);     // at most 23 bytes, and the space before
        text[at++] = ':';
        at += write_int(text + at, r->col);
    }
    if (count) groups[3 * count - 1] = at;
    free(keys);
    return count;
}
