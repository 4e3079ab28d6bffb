// Rust's tokens for scan.c: identifiers, lifetimes, literals (strings of every kind, chars, numbers), punctuation
// (`::`, `->` and `=>` as one token each) and comments, doc comments apart. Line and byte column of each token.
#include <stdint.h>

#include "scan.h"

enum { T_IDENT, T_LIFETIME, T_LIT, T_PUNCT, T_DOC, T_COMMENT };
enum { P_PATH = 256, P_ARROW, P_FATARROW };           // `::`, `->`, `=>`; other punctuation is its own byte

typedef struct { int32_t type, start, end, line, col, punct; } Token;

typedef struct {
    const uint8_t *s;
    int n, pos, line, line_start;
} Lexer;

static int ident_byte(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

static void newline_at(Lexer *lx, int i) { lx->line++; lx->line_start = i + 1; }

static int space_at(const Lexer *lx, int i) { return space_len(lx->s + i, lx->n - i); }

static int ident_at(const Lexer *lx, int i) {    // a byte of an identifier (a non-ASCII one unless it is a space)
    return ident_byte(lx->s[i]) && (lx->s[i] < 0x80 || !space_at(lx, i));
}

static void skip_quoted(Lexer *lx, uint8_t quote) {   // from just after the opening quote, past the closing one
    while (lx->pos < lx->n) {
        uint8_t c = lx->s[lx->pos++];
        if (c == '\\' && lx->pos < lx->n) {
            if (lx->s[lx->pos] == '\n') newline_at(lx, lx->pos);
            lx->pos++;
        } else if (c == '\n') newline_at(lx, lx->pos - 1);
        else if (c == quote) return;
    }
}

static int raw_string(Lexer *lx, int at) {    // at: after the prefix (r, br, cr); 1 when a raw string was skipped
    int hashes = 0, i = at;
    while (i < lx->n && lx->s[i] == '#') { hashes++; i++; }
    if (i >= lx->n || lx->s[i] != '"') return 0;
    for (i++; i < lx->n; i++) {
        if (lx->s[i] == '\n') newline_at(lx, i);
        if (lx->s[i] != '"') continue;
        int h = 0;
        while (h < hashes && i + 1 + h < lx->n && lx->s[i + 1 + h] == '#') h++;
        if (h == hashes) { lx->pos = i + 1 + h; return 1; }
    }
    lx->pos = lx->n;
    return 1;
}

static int utf8_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// One token from lx->pos (whitespace skipped); 0 at the end
static int next_token(Lexer *lx, Token *t) {
    const uint8_t *s = lx->s;
    for (int w; lx->pos < lx->n && (w = space_at(lx, lx->pos));) {
        if (s[lx->pos] == '\n') newline_at(lx, lx->pos);
        lx->pos += w;
    }
    if (lx->pos >= lx->n) return 0;
    int i = lx->pos;
    uint8_t c = s[i];
    t->start = i; t->line = lx->line; t->col = i - lx->line_start; t->punct = 0;
    if (c == '/' && i + 1 < lx->n && s[i + 1] == '/') {
        while (lx->pos < lx->n && s[lx->pos] != '\n') lx->pos++;
        t->type = (lx->pos - i >= 3 && s[i + 2] == '/' && !(lx->pos - i >= 4 && s[i + 3] == '/')) ? T_DOC : T_COMMENT;
    } else if (c == '/' && i + 1 < lx->n && s[i + 1] == '*') {
        int depth = 0;
        while (lx->pos < lx->n) {
            if (s[lx->pos] == '/' && lx->pos + 1 < lx->n && s[lx->pos + 1] == '*') { depth++; lx->pos += 2; }
            else if (s[lx->pos] == '*' && lx->pos + 1 < lx->n && s[lx->pos + 1] == '/') {
                lx->pos += 2;
                if (--depth == 0) break;
            } else {
                if (s[lx->pos] == '\n') newline_at(lx, lx->pos);
                lx->pos++;
            }
        }
        t->type = (lx->pos - i >= 3 && s[i + 2] == '*') ? T_DOC : T_COMMENT;
    } else if (c == '"') {
        lx->pos++; skip_quoted(lx, '"'); t->type = T_LIT;
    } else if (c == '\'') {
        int j = i + 1;
        if (j < lx->n && s[j] == '\\') { lx->pos = j; skip_quoted(lx, '\''); t->type = T_LIT; }
        else if (j < lx->n && j + utf8_len(s[j]) < lx->n && s[j + utf8_len(s[j])] == '\'') {
            lx->pos = j + utf8_len(s[j]) + 1; t->type = T_LIT;
        } else {
            lx->pos = j;
            while (lx->pos < lx->n && ident_at(lx, lx->pos)) lx->pos++;
            t->type = T_LIFETIME;
        }
    } else if (c >= '0' && c <= '9') {
        lx->pos++;
        while (lx->pos < lx->n && (ident_at(lx, lx->pos) ||
               (s[lx->pos] == '.' && lx->pos + 1 < lx->n && s[lx->pos + 1] >= '0' && s[lx->pos + 1] <= '9')))
            lx->pos++;
        t->type = T_LIT;
    } else if (ident_byte(c)) {
        int j = i;                                   // string prefixes: b"", b'', r"", r#""#, br"", c"", cr""
        if ((c == 'b' || c == 'c') && j + 1 < lx->n && s[j + 1] == 'r') j++;
        if ((c == 'b' || c == 'c') && j == i && j + 1 < lx->n && (s[j + 1] == '"' || (c == 'b' && s[j + 1] == '\''))) {
            lx->pos = j + 2; skip_quoted(lx, s[j + 1]); t->type = T_LIT;
        } else if ((s[j] == 'r') && raw_string(lx, j + 1)) {
            t->type = T_LIT;
        } else {
            lx->pos = i;
            if (c == 'r' && i + 2 < lx->n && s[i + 1] == '#' && ident_byte(s[i + 2])) lx->pos = i + 2;  // r#ident
            while (lx->pos < lx->n && ident_at(lx, lx->pos)) lx->pos++;
            t->type = T_IDENT;
        }
    } else {
        t->type = T_PUNCT; t->punct = c; lx->pos++;
        uint8_t d = lx->pos < lx->n ? s[lx->pos] : 0;
        if (c == ':' && d == ':') { t->punct = P_PATH; lx->pos++; }
        else if (c == '-' && d == '>') { t->punct = P_ARROW; lx->pos++; }
        else if (c == '=' && d == '>') { t->punct = P_FATARROW; lx->pos++; }
    }
    t->end = lx->pos;
    return 1;
}
