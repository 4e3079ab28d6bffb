// A lexical scanner for Rust: the index's definitions, imports and references in one pass over the tokens,
// at tens of MB/s where a tree-sitter parse runs at ~8 (assistant/index/scan.py wraps it; parse.py, the
// tree-sitter reading, is the reference it is tested against). No syntax tree: a stack of open delimiters says
// what a token sits in (an item body, a block, a macro's token tree), and a definition is a keyword at the start
// of a statement, after modifiers only. Broken code is scanned as far as it goes; nothing here can fail.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lex.h"
#include "scan.h"

// What an open delimiter holds
enum { F_ITEMS, F_FIELDS, F_ENUM, F_MACRO, F_ATTR, F_OTHER };

typedef struct {
    int kind, close, scope, owner;   // close: the closing byte; scope: the def naming items inside (-1: none)
    int angle;                       // `<` minus `>` since the last field or variant started (commas in generics)
    int stmt, mods_only;             // first token of the current statement (-1: none yet), modifiers only so far
    int open_def, body_brace;        // a definition waiting for its `;` or body, and whether `{` is its body
    int doc_start, doc_end;          // the doc comments right before the statement (-1: none)
    int last;                        // the last token of the current field or variant
    int trait;                       // a trait's or extern block's body: `type X;` there declares no alias
    int foreign;                     // the statement so far began `extern`: its `{` opens an extern block
} Frame;


typedef struct {
    const uint8_t *s;
    Token *tok;
    int nt;
    int32_t *close_of;               // an opening delimiter's matching closer (-1: none)
    Def *defs; int ndefs, max_defs;
    Ref *refs; int nrefs, max_refs;
    Frame *fr; int depth, overflow;  // overflow: delimiters opened past MAX_DEPTH, not pushed
} Scan;

enum { MAX_DEPTH = 512 };

static int is(const Scan *sc, int i, const char *word) {
    if (i < 0 || i >= sc->nt || sc->tok[i].type != T_IDENT) return 0;
    int len = sc->tok[i].end - sc->tok[i].start;
    return (int)strlen(word) == len && memcmp(sc->s + sc->tok[i].start, word, len) == 0;
}

static int punct(const Scan *sc, int i) {
    return i >= 0 && i < sc->nt && sc->tok[i].type == T_PUNCT ? sc->tok[i].punct : 0;
}
static int ident(const Scan *sc, int i) { return i >= 0 && i < sc->nt && sc->tok[i].type == T_IDENT; }
static int opener(int p) { return p == '(' || p == '[' || p == '{'; }

static const char *KEYWORDS[] = {"as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "yield", 0};

static int keyword(const Scan *sc, int i) {
    for (const char **k = KEYWORDS; *k; k++)
        if (is(sc, i, *k)) return 1;
    return 0;
}

static void add_ref(Scan *sc, int kind, int i) {
    if (sc->nrefs >= sc->max_refs) { sc->nrefs++; return; }    // counted: the caller retries with room
    Ref *r = &sc->refs[sc->nrefs++];
    r->kind = kind; r->start = sc->tok[i].start; r->end = sc->tok[i].end; r->line = sc->tok[i].line;
    r->col = sc->tok[i].col;
}

static int add_def(Scan *sc, Frame *f, int kind, int first, int name) {
    if (sc->ndefs >= sc->max_defs) { sc->ndefs++; return -1; }
    Def *d = &sc->defs[sc->ndefs];
    memset(d, 0, sizeof *d);
    d->kind = kind; d->scope = f->scope;
    d->name_start = sc->tok[name].start; d->name_end = sc->tok[name].end;
    d->start = sc->tok[first].start; d->start_line = sc->tok[first].line; d->start_col = sc->tok[first].col;
    d->sig_end = -1; d->end = -1;
    d->doc_start = f->doc_start; d->doc_end = f->doc_end;
    return sc->ndefs++;
}

static void end_def(Scan *sc, int d, int last) {
    if (d < 0 || d >= sc->max_defs) return;
    const Token *t = &sc->tok[last];
    sc->defs[d].end = t->end; sc->defs[d].end_line = t->line; sc->defs[d].end_col = t->col + (t->end - t->start);
    if (sc->defs[d].sig_end < 0) sc->defs[d].sig_end = t->end;
}

static void new_statement(Frame *f) {
    f->stmt = -1; f->mods_only = 1; f->open_def = -1; f->doc_start = f->doc_end = -1; f->angle = 0; f->last = -1;
    f->foreign = 0;
}

static void push(Scan *sc, int kind, int close, int scope, int owner, int trait) {
    if (sc->depth + 1 >= MAX_DEPTH) { sc->overflow++; return; }
    Frame *f = &sc->fr[++sc->depth];
    f->kind = kind; f->close = close; f->scope = scope; f->owner = owner; f->trait = trait;
    new_statement(f);
}

static int closer_of(int p) { return p == '(' ? ')' : p == '[' ? ']' : '}'; }

// `impl<..> [Trait for] Type [where ..] {`: the def with the type as its name and the trait
static void impl_header(Scan *sc, Frame *f, int first, int i) {
    int j = i + 1, angle = 0;
    if (punct(sc, j) == '<') {
        for (; j < sc->nt; j++) {
            int p = punct(sc, j);
            if (p == '<') angle++;
            else if (p == '>' && --angle == 0) { j++; break; }
            else if (opener(p) && sc->close_of[j] > j) j = sc->close_of[j];
            else if (p == '{' || p == ';') break;
        }
    }
    int type_start = j, trait_start = -1, trait_end = -1, k = j;
    for (angle = 0; k < sc->nt; k++) {
        int p = punct(sc, k);
        if (p == '<') angle++;
        else if (p == '>') angle--;
        else if (p == '{' || p == ';') break;
        else if (opener(p) && sc->close_of[k] > k) k = sc->close_of[k];
        else if (angle <= 0 && is(sc, k, "where")) break;
        else if (angle <= 0 && is(sc, k, "for") && k > type_start) { trait_start = type_start; trait_end = k - 1;
                                                                      type_start = k + 1; }
    }
    if (type_start >= k || k > sc->nt) return;
    int d = add_def(sc, f, K_IMPL, first, type_start);
    if (d < 0) return;
    sc->defs[d].name_end = sc->tok[k - 1].end;
    if (trait_start >= 0) { sc->defs[d].trait_start = sc->tok[trait_start].start;
                            sc->defs[d].trait_end = sc->tok[trait_end].end; }
    f->open_def = d;
}

// A keyword at a statement's start (modifiers only before it): a definition or an import. Returns the token to
// go on from (the name, which is no reference) or -1 when token i starts nothing.
static int item(Scan *sc, Frame *f, int i, int in_trait) {
    int first = f->stmt >= 0 ? f->stmt : i, kind = -1, name = i + 1;
    if (is(sc, i, "fn")) kind = K_FN;
    else if (is(sc, i, "struct")) kind = K_STRUCT;
    else if (is(sc, i, "union") && ident(sc, i + 1)) kind = K_UNION;
    else if (is(sc, i, "enum")) kind = K_ENUM;
    else if (is(sc, i, "trait")) kind = K_TRAIT;
    else if (is(sc, i, "mod")) kind = K_MOD;
    else if (is(sc, i, "type") && !in_trait) kind = K_TYPE;
    else if (is(sc, i, "const") && !is(sc, i + 1, "fn") && !is(sc, i + 1, "unsafe") && !is(sc, i + 1, "async")
             && !is(sc, i + 1, "extern")) kind = K_CONST;
    else if (is(sc, i, "static")) { kind = K_STATIC; if (is(sc, name, "mut")) name++; }
    else if (is(sc, i, "macro_rules") && punct(sc, i + 1) == '!') { kind = K_MACRO; name = i + 2; }
    else if (is(sc, i, "impl")) { f->stmt = first; f->mods_only = 0; impl_header(sc, f, first, i); return i; }
    else if (is(sc, i, "use")) {
        int j = i + 1;
        while (j < sc->nt && punct(sc, j) != ';') {
            if (opener(punct(sc, j)) && sc->close_of[j] > j) j = sc->close_of[j];
            j++;
        }
        if (j > i + 1 && j <= sc->nt) {
            add_ref(sc, R_IMPORT, i + 1);
            if (sc->nrefs <= sc->max_refs) sc->refs[sc->nrefs - 1].end = sc->tok[j - 1].end;
        }
        new_statement(f);
        return j;
    } else return -1;
    if (!ident(sc, name) || (keyword(sc, name) && !is(sc, name, "_"))) return -1;
    int d = add_def(sc, f, kind, first, name);
    f->stmt = first; f->mods_only = 0; f->open_def = d;
    return name;
}

static int modifier(Scan *sc, int i) {   // how many tokens the modifier at i takes (0: none)
    if (is(sc, i, "pub")) return punct(sc, i + 1) == '(' && sc->close_of[i + 1] > i ? sc->close_of[i + 1] - i + 1 : 1;
    if (is(sc, i, "extern")) return sc->tok[i + 1 < sc->nt ? i + 1 : i].type == T_LIT ? 2 : 1;
    if ((is(sc, i, "async") || is(sc, i, "unsafe") || is(sc, i, "default") || is(sc, i, "auto") ||
         is(sc, i, "const")) && ident(sc, i + 1) && !is(sc, i + 1, "move"))
        return is(sc, i, "const") && !(is(sc, i + 1, "fn") || is(sc, i + 1, "unsafe") || is(sc, i + 1, "async") ||
                                       is(sc, i + 1, "extern")) ? 0 : 1;
    return 0;
}

static int anonymous(const Scan *sc, int j) {   // a token tree-sitter leaves unnamed: punctuation, most keywords
    int p = punct(sc, j);
    if (p) return !opener(p) && p != ')' && p != ']' && p != '}';
    return keyword(sc, j) && !is(sc, j, "mut") && !is(sc, j, "self") && !is(sc, j, "super") && !is(sc, j, "crate");
}

// In a macro's token tree, an identifier followed (past unnamed tokens) by a token tree reads as a call, as
// parse.py's query has it: `name!(..)`, `f(..)`, `x: (..)`; `$name` is a metavariable, no identifier
static int macro_call(const Scan *sc, int i) {
    if (keyword(sc, i) || punct(sc, i - 1) == '$') return 0;
    int j = i + 1;
    while (j < sc->nt && anonymous(sc, j)) j++;
    return opener(punct(sc, j));
}

static int value_name(const uint8_t *w, int len) {   // capitalised but never a type: ALL_CAPS constants, `None`
    if (len == 4 && memcmp(w, "None", 4) == 0) return 1;
    for (int k = 1; k < len; k++)
        if (w[k] >= 'a' && w[k] <= 'z') return 0;
    return len > 1;
}

static int closure_trait(const Scan *sc, int i) {   // `Fn(..)`: a type, not a call
    return is(sc, i, "Fn") || is(sc, i, "FnMut") || is(sc, i, "FnOnce");
}

static int pattern(const Scan *sc, int i) {   // `X(..)` as a pattern: `let X(..)`, `X(..) =>`
    int close = sc->close_of[i + 1];
    return is(sc, i - 1, "let") || (close > 0 && punct(sc, close + 1) == P_FATARROW);
}

static void reference(Scan *sc, int i, int *macro_next) {
    int next = punct(sc, i + 1), prev = punct(sc, i - 1);
    const uint8_t *w = sc->s + sc->tok[i].start;
    int len = sc->tok[i].end - sc->tok[i].start;
    if (next == '(') {
        if (closure_trait(sc, i)) add_ref(sc, R_TYPE, i);
        else if (!keyword(sc, i) && !pattern(sc, i)) add_ref(sc, R_CALL, i);
    } else if (next == '!' && opener(punct(sc, i + 2))) {
        if (prev != P_PATH && !keyword(sc, i)) add_ref(sc, R_CALL, i);
        *macro_next = 1;
    } else if (w[0] >= 'A' && w[0] <= 'Z' && next != P_PATH && !value_name(w, len)) {
        add_ref(sc, R_TYPE, i);
    }
}

// An opening delimiter: the body of the definition waiting for one, a macro's token tree, or a plain group
static void open(Scan *sc, Frame *f, int i, int p, int *macro_next) {
    int close = closer_of(p), d = f->open_def;
    if (*macro_next) { *macro_next = 0; push(sc, F_MACRO, close, f->scope, -1, 0); return; }
    if (d >= 0 && d < sc->max_defs && f->kind == F_ITEMS) {
        Def *def = &sc->defs[d];
        int k = def->kind, scoping = k == K_TRAIT || k == K_IMPL || k == K_MOD;
        if (k == K_MACRO) { f->open_def = -1; push(sc, F_MACRO, close, f->scope, d, 0); return; }
        if (p == '{' && (k == K_FN || k == K_STRUCT || k == K_UNION || k == K_ENUM || scoping)) {
            def->sig_end = sc->tok[i].start; f->open_def = -1;
            int kind = k == K_STRUCT || k == K_UNION ? F_FIELDS : k == K_ENUM ? F_ENUM : F_ITEMS;
            push(sc, kind, '}', scoping ? d : f->scope, d, k == K_TRAIT);
            return;
        }
        if (p == '(' && (k == K_STRUCT || k == K_UNION) && def->sig_end < 0 && f->angle <= 0)
            def->sig_end = sc->tok[i].start;     // a tuple struct's fields (not a bound's `Fn()`)
    }
    if (f->kind == F_ENUM && p == '{') { push(sc, F_FIELDS, '}', f->scope, -1, 0); return; }
    push(sc, p == '{' ? F_ITEMS : F_OTHER, close, f->scope, -1, p == '{' && f->foreign);
}

// A closing delimiter: pops to its frame (a stray one is ignored), ending the definitions left open inside
static void close(Scan *sc, int i, int p) {
    if (sc->overflow) { sc->overflow--; return; }
    int k = sc->depth;
    while (k > 0 && sc->fr[k].close != p) k--;
    if (k == 0) return;
    while (sc->depth >= k) {
        Frame *g = &sc->fr[sc->depth--];
        if (g->open_def >= 0) end_def(sc, g->open_def, g->last >= 0 ? g->last : i);
        if (g->owner >= 0) {
            int owner_kind = g->owner < sc->max_defs ? sc->defs[g->owner].kind : -1;
            end_def(sc, g->owner, owner_kind == K_MACRO && p != '}' && punct(sc, i + 1) == ';' ? i + 1 : i);
        }
    }
    Frame *f = &sc->fr[sc->depth];
    f->last = i;
    if (f->kind == F_ITEMS && f->open_def < 0 && p == '}') new_statement(f);
}

static int start_field(Scan *sc, Frame *f, int i) {   // a named field or an enum variant at token i (0: not one)
    int field = f->kind == F_FIELDS && punct(sc, i + 1) == ':';
    if (!field && !(f->kind == F_ENUM && !keyword(sc, i))) return 0;
    f->open_def = add_def(sc, f, field ? K_FIELD : K_VARIANT, f->stmt >= 0 ? f->stmt : i, i);
    f->stmt = f->stmt >= 0 ? f->stmt : i; f->mods_only = 0; f->last = i;
    return 1;
}

static void parse(Scan *sc) {
    int macro_next = 0;
    sc->depth = -1;
    push(sc, F_ITEMS, 0, -1, -1, 0);
    for (int i = 0; i < sc->nt; i++) {
        Frame *f = &sc->fr[sc->depth];
        const Token *t = &sc->tok[i];
        int p = t->type == T_PUNCT ? t->punct : 0;
        if (t->type == T_COMMENT) { f->doc_start = f->doc_end = -1; continue; }
        if (t->type == T_DOC) {
            if (f->stmt < 0) { if (f->doc_start < 0) f->doc_start = t->start; f->doc_end = t->end; }
            continue;
        }
        if (p == ')' || p == ']' || p == '}') { close(sc, i, p); continue; }
        if (f->kind == F_MACRO || f->kind == F_ATTR) {
            if (opener(p)) push(sc, F_MACRO, closer_of(p), f->scope, -1, 0);
            else if (t->type == T_IDENT && f->kind == F_MACRO && macro_call(sc, i)) add_ref(sc, R_CALL, i);
            continue;
        }
        if (p == '#' && (punct(sc, i + 1) == '[' || (punct(sc, i + 1) == '!' && punct(sc, i + 2) == '['))) {
            i += punct(sc, i + 1) == '[' ? 1 : 2;
            push(sc, F_ATTR, ']', f->scope, -1, 0);
            continue;
        }
        if (opener(p)) { open(sc, f, i, p, &macro_next); continue; }
        if (p == ',' && (f->kind == F_ENUM || (f->kind == F_FIELDS && f->angle <= 0))) {
            if (f->open_def >= 0) end_def(sc, f->open_def, f->last >= 0 ? f->last : i);
            new_statement(f);
            continue;
        }
        if (p == ';' && f->kind == F_ITEMS) {
            if (f->open_def >= 0) end_def(sc, f->open_def, i);
            new_statement(f);
            continue;
        }
        f->angle += (p == '<') - (p == '>');   // generics: a field's commas and a tuple struct's `(` sit outside
        if (t->type == T_IDENT) {
            if (f->mods_only) {
                int m = modifier(sc, i);
                if (m) {
                    if (f->stmt < 0) f->stmt = i;
                    f->foreign |= is(sc, i, "extern");
                    i += m - 1; f->last = i;
                    continue;
                }
                if (f->kind == F_ITEMS) {
                    int j = item(sc, f, i, f->trait);
                    if (j >= 0) { f->last = j; i = j; continue; }
                } else if (start_field(sc, f, i)) continue;
            }
            reference(sc, i, &macro_next);
        }
        if (f->stmt < 0) f->stmt = i;
        f->mods_only = 0; f->last = i;
    }
    for (; sc->depth >= 0; sc->depth--) {           // unclosed at the end of the file: end what is open there
        Frame *g = &sc->fr[sc->depth];
        if (g->open_def >= 0) end_def(sc, g->open_def, g->last >= 0 ? g->last : sc->nt - 1);
        if (g->owner >= 0) end_def(sc, g->owner, sc->nt - 1);
    }
}

static void match_delimiters(Scan *sc) {
    int *stack = malloc(sizeof(int) * (sc->nt + 1)), top = 0;
    for (int i = 0; i < sc->nt; i++) {
        int p = punct(sc, i);
        sc->close_of[i] = -1;
        if (opener(p)) stack[top++] = i;
        else if (p == ')' || p == ']' || p == '}') {
            int k = top;
            while (k > 0 && closer_of(punct(sc, stack[k - 1])) != p) k--;
            if (k > 0) { sc->close_of[stack[k - 1]] = i; top = k - 1; }
        }
    }
    free(stack);
}

// Scan n bytes of Rust into defs and refs (imports are refs of kind R_IMPORT). counts: (definitions, references)
// found; when either is over its max, nothing past the max was written and the caller retries with room.
// Returns 0, or -1 when memory ran out.
int rust_scan(const uint8_t *src, int32_t n, Def *defs, int32_t max_defs, Ref *refs, int32_t max_refs,
              int32_t *counts) {
    Lexer lx = {src, n, 0, 0, 0};
    Scan sc = {0};
    int cap = n / 4 + 64;
    sc.s = src; sc.tok = malloc(sizeof(Token) * cap);
    sc.fr = malloc(sizeof(Frame) * MAX_DEPTH);
    if (!sc.tok || !sc.fr) { free(sc.tok); free(sc.fr); return -1; }
    while (next_token(&lx, &sc.tok[sc.nt])) {
        if (++sc.nt == cap) {
            Token *grown = realloc(sc.tok, sizeof(Token) * (cap *= 2));
            if (!grown) { free(sc.tok); free(sc.fr); return -1; }
            sc.tok = grown;
        }
    }
    sc.close_of = malloc(sizeof(int32_t) * (sc.nt + 1));
    if (!sc.close_of) { free(sc.tok); free(sc.fr); return -1; }
    match_delimiters(&sc);
    sc.defs = defs; sc.max_defs = max_defs; sc.refs = refs; sc.max_refs = max_refs;
    parse(&sc);
    counts[0] = sc.ndefs; counts[1] = sc.nrefs;
    free(sc.tok); free(sc.fr); free(sc.close_of);
    return 0;
}
