// A bulk fill's rows written straight into a part database through SQLite's C API, the library Python's sqlite3
// module runs on (rows.py hands its functions over): the fill's Python then runs once per file, not once per row.
// Every column holds what store.write_file writes from scan.py's FileSymbols, byte for byte (the tests compare the
// two databases). A file this cannot match exactly (not UTF-8, a signature cut inside a character) is left to them.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scan.h"

typedef void (*Destructor)(void *);
typedef struct {     // in rows.py's FUNCTIONS order
    int (*open_v2)(const char *, void **, int, const char *);
    int (*close)(void *);
    int (*exec)(void *, const char *, void *, void *, char **);
    int (*prepare_v2)(void *, const char *, int, void **, const char **);
    int (*bind_int64)(void *, int, int64_t);
    int (*bind_double)(void *, int, double);
    int (*bind_text)(void *, int, const char *, int, Destructor);
    int (*step)(void *);
    int (*reset)(void *);
    int (*finalize)(void *);
    int64_t (*last_insert_rowid)(void *);
} Api;
enum { OK = 0, DONE = 101, OPEN_READWRITE = 2 };

static const char *KINDS[] = {"fn", "struct", "enum", "union", "trait", "impl", "const", "static", "type", "macro",
                              "mod", "variant", "field"};      // scan.py's KINDS
static const char *REF_KINDS[] = {"call", "type"};

typedef struct { char *p; int64_t len, cap; } Buffer;

typedef struct {
    Api api;
    void *db, *file, *symbol, *import, *ref;
    int sig_chars, sig_window;
    Def *defs; int max_defs;
    Ref *refs; int max_refs;
    Ref *uses; int32_t *groups; char *places;
    Buffer sig, doc;
} Writer;

static int reserve(Buffer *b, int64_t more) {
    if (b->len + more <= b->cap) return 1;
    int64_t cap = (b->len + more) * 2;
    char *p = realloc(b->p, cap);
    if (!p) return 0;
    b->p = p; b->cap = cap;
    return 1;
}

// ----- Python's str semantics on UTF-8 bytes ------------------------------------------------------------------
static int utf8_valid(const uint8_t *s, int32_t n) {   // exactly what bytes.decode("utf-8") accepts
    for (int32_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || i + len > n) return 0;
        for (int k = 1; k < len; k++) if ((s[i + k] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) || (c == 0xF0 && s[i + 1] < 0x90) ||
            (c == 0xF4 && s[i + 1] > 0x8F)) return 0;   // overlong, surrogate, past U+10FFFF
        i += len;
    }
    return 1;
}

static int space(const uint8_t *s, const uint8_t *end) {   // bytes of the str.isspace() character at s (0: none)
    return s[0] >= 28 && s[0] <= 31 ? 1 : space_len(s, end - s);   // Python's separators 0x1c-0x1f, then the lexer's
}

static int64_t char_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// " ".join(s[a:b].split())[:chars]
static int collapse(Buffer *out, const uint8_t *s, const uint8_t *end, int chars) {
    out->len = 0;
    if (!reserve(out, end - s)) return 0;
    int count = 0, gap = 0;
    while (s < end && count < chars) {
        int w = space(s, end);
        if (w) { s += w; gap = out->len > 0; continue; }
        if (gap) { out->p[out->len++] = ' '; gap = 0; if (++count == chars) break; }
        int64_t len = char_len(*s);
        memcpy(out->p + out->len, s, len);
        out->len += len; s += len; count++;
    }
    return 1;
}

// Append s[a:b].strip()
static int append_stripped(Buffer *out, const uint8_t *a, const uint8_t *b) {
    while (a < b && space(a, b)) a += space(a, b);
    while (b > a) {              // the last character: step back over its continuation bytes
        const uint8_t *c = b - 1;
        while (c > a && (*c & 0xC0) == 0x80) c--;
        if (!space(c, b)) break;
        b = c;
    }
    if (!reserve(out, b - a + 1)) return 0;
    memcpy(out->p + out->len, a, b - a);
    out->len += b - a;
    return 1;
}

// scan.py's _doc: each match of DOC_COMMENT (rb"///[^\n]*|/\*\*.*?\*/", DOTALL) read by parse.doc_line, kept lines
// joined with newlines
static int doc(Buffer *out, const uint8_t *s, const uint8_t *end) {
    out->len = 0;
    int lines = 0;
    while (s + 3 <= end) {
        const uint8_t *a = s, *b = NULL;
        if (s[0] == '/' && s[1] == '/' && s[2] == '/') {
            b = s + 3;
            while (b < end && *b != '\n') b++;
        } else if (s[0] == '/' && s[1] == '*' && s[2] == '*') {
            for (const uint8_t *k = s + 3; k + 1 < end; k++) if (k[0] == '*' && k[1] == '/') { b = k + 2; break; }
        }
        if (!b) { s++; continue; }
        s = b;
        if (a[2] == '/' && b - a > 3 && a[3] == '/') continue;        // `////`: no doc comment
        if (lines++ > 0) {
            if (!reserve(out, 1)) return 0;
            out->p[out->len++] = '\n';
        }
        if (!(a[2] == '/' ? append_stripped(out, a + 3, b) : append_stripped(out, a + 3, b - 2))) return 0;
    }
    return 1;
}

// ----- SQLite ---------------------------------------------------------------------------------------------------
static int text(Writer *w, void *st, int i, const void *p, int64_t len) {
    return w->api.bind_text(st, i, len ? (const char *)p : "", (int)len, (Destructor)0);   // bound until the step
}

static int run(Writer *w, void *st) {
    int rc = w->api.step(st);
    w->api.reset(st);
    return rc == DONE;
}

static const char *SQL[] = {
    "INSERT INTO files (path, module, mtime_ns, size, hash, indexed_at) VALUES (?, ?, ?, ?, ?, ?)",
    "INSERT INTO symbols (file_id, kind, name, scope, trait, start_line, start_col, end_line, end_col, start_byte, "
    "end_byte, signature, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO imports VALUES (?, ?, ?)",
    "INSERT INTO refs VALUES (?, ?, ?, ?)",
};

void rows_close(Writer *w, int commit);

// A writer on the part database at `path` (its tables made already), a transaction open. NULL: no memory, or
// SQLite refused.
Writer *rows_open(const Api *api, const char *path, int32_t sig_chars, int32_t sig_window) {
    Writer *w = calloc(1, sizeof(Writer));
    if (!w) return NULL;
    w->api = *api; w->sig_chars = sig_chars; w->sig_window = sig_window;
    void **statements[] = {&w->file, &w->symbol, &w->import, &w->ref};
    int ok = api->open_v2(path, &w->db, OPEN_READWRITE, NULL) == OK &&
             api->exec(w->db, "PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144; "
                              "BEGIN", NULL, NULL, NULL) == OK;
    for (int i = 0; ok && i < 4; i++) ok = api->prepare_v2(w->db, SQL[i], -1, statements[i], NULL) == OK;
    if (!ok) { rows_close(w, 0); return NULL; }
    return w;
}

static int scan(Writer *w, const uint8_t *src, int32_t n, int32_t *counts) {
    int want_defs = n / 32 + 64, want_refs = n / 8 + 64;
    for (;;) {
        if (want_defs > w->max_defs) {
            free(w->defs);
            if (!(w->defs = malloc(sizeof(Def) * want_defs))) { w->max_defs = 0; return 0; }
            w->max_defs = want_defs;
        }
        if (want_refs > w->max_refs) {
            free(w->refs); free(w->uses); free(w->groups); free(w->places);
            w->refs = malloc(sizeof(Ref) * want_refs); w->uses = malloc(sizeof(Ref) * want_refs);
            w->groups = malloc(sizeof(int32_t) * 3 * want_refs); w->places = malloc(REF_PLACE_BYTES * want_refs);
            w->max_refs = want_refs;
            if (!w->refs || !w->uses || !w->groups || !w->places) { w->max_refs = 0; return 0; }
        }
        if (rust_scan(src, n, w->defs, w->max_defs, w->refs, w->max_refs, counts)) return 0;
        if (counts[0] <= w->max_defs && counts[1] <= w->max_refs) return 1;
        want_defs = counts[0] > want_defs ? counts[0] : want_defs;
        want_refs = counts[1] > want_refs ? counts[1] : want_refs;
    }
}

static int32_t signature_end(const Writer *w, const Def *d) {   // scan.py clips the window the same way
    return d->sig_end < d->start + w->sig_window ? d->sig_end : d->start + w->sig_window;
}

static int write_symbols(Writer *w, int64_t file_id, const uint8_t *src, const Def *defs, int count) {
    void *st = w->symbol;
    for (int i = 0; i < count; i++) {
        const Def *d = &defs[i];
        if (!collapse(&w->sig, src + d->start, src + signature_end(w, d), w->sig_chars)) return -1;
        w->doc.len = 0;
        if (d->doc_start >= 0 && !doc(&w->doc, src + d->doc_start, src + d->doc_end)) return -1;
        const Def *scope = d->scope >= 0 ? &defs[d->scope] : NULL;
        w->api.bind_int64(st, 1, file_id);
        text(w, st, 2, KINDS[d->kind], strlen(KINDS[d->kind]));
        text(w, st, 3, src + d->name_start, d->name_end - d->name_start);
        text(w, st, 4, scope ? src + scope->name_start : src, scope ? scope->name_end - scope->name_start : 0);
        text(w, st, 5, src + d->trait_start, d->trait_end - d->trait_start);
        int32_t numbers[] = {d->start_line, d->start_col, d->end_line, d->end_col, d->start, d->end};
        for (int k = 0; k < 6; k++) w->api.bind_int64(st, 6 + k, numbers[k]);
        text(w, st, 12, w->sig.p, w->sig.len);
        text(w, st, 13, w->doc.p, w->doc.len);
        if (!run(w, st)) return -1;
    }
    return 0;
}

static int write_references(Writer *w, int64_t file_id, const uint8_t *src, int nrefs, int64_t *places) {
    int nuses = 0;
    for (int i = 0; i < nrefs; i++) {
        const Ref *r = &w->refs[i];
        if (r->kind == R_IMPORT) {
            w->api.bind_int64(w->import, 1, file_id);
            text(w, w->import, 2, src + r->start, r->end - r->start);
            w->api.bind_int64(w->import, 3, r->line);
            if (!run(w, w->import)) return -1;
        } else {
            w->uses[nuses++] = *r;
        }
    }
    int groups = group_refs(src, w->uses, nuses, w->places, w->groups);
    if (groups < 0) return -1;
    for (int g = 0; g < groups; g++) {
        const Ref *first = &w->uses[w->groups[3 * g]];
        w->api.bind_int64(w->ref, 1, file_id);
        text(w, w->ref, 2, src + first->start, first->end - first->start);
        text(w, w->ref, 3, REF_KINDS[first->kind], 4);
        text(w, w->ref, 4, w->places + w->groups[3 * g + 1], w->groups[3 * g + 2] - w->groups[3 * g + 1]);
        if (!run(w, w->ref)) return -1;
    }
    *places = nuses;
    return 0;
}

// One file's rows. 0: written, counts = (definitions, references); 1: not written, the Python path must (see the
// top); -1: no memory or a SQLite error (the transaction is then to be rolled back).
int rows_write(Writer *w, const char *path, const char *module, int64_t mtime_ns, int64_t size, const char *hash,
               double indexed_at, const uint8_t *src, int32_t n, int64_t *counts) {
    int32_t found[2];
    if (!utf8_valid(src, n)) return 1;
    if (!scan(w, src, n, found)) return -1;
    for (int i = 1; i < found[0]; i++) if (w->defs[i].start < w->defs[i - 1].start) return 1;  // scan.py sorts
    for (int i = 0; i < found[0]; i++) {      // a signature's window cut inside a character: Python reads U+FFFD
        int32_t end = signature_end(w, &w->defs[i]);
        if (end < n && (src[end] & 0xC0) == 0x80) return 1;
    }
    void *st = w->file;
    text(w, st, 1, path, strlen(path));
    text(w, st, 2, module, strlen(module));
    w->api.bind_int64(st, 3, mtime_ns);
    w->api.bind_int64(st, 4, size);
    text(w, st, 5, hash, strlen(hash));
    w->api.bind_double(st, 6, indexed_at);
    if (!run(w, st)) return -1;
    int64_t file_id = w->api.last_insert_rowid(w->db);
    if (write_symbols(w, file_id, src, w->defs, found[0])) return -1;
    if (write_references(w, file_id, src, found[1], &counts[1])) return -1;
    counts[0] = found[0];
    return 0;
}

// Commit (or roll back) and free everything
void rows_close(Writer *w, int commit) {
    void *statements[] = {w->file, w->symbol, w->import, w->ref};
    for (int i = 0; i < 4; i++) if (statements[i]) w->api.finalize(statements[i]);
    if (w->db) {
        w->api.exec(w->db, commit ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
        w->api.close(w->db);
    }
    free(w->defs); free(w->refs); free(w->uses); free(w->groups); free(w->places); free(w->sig.p); free(w->doc.p);
    free(w);
}
