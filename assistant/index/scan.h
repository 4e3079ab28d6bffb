// What the scan writes for scan.py and rows.c: a definition and a reference, each a row of int32 (scan.py's
// DEF_COLUMNS, REF_COLUMNS), and the functions that fill them
#ifndef RUSTLE_SCAN_H
#define RUSTLE_SCAN_H
#include <stdint.h>

// Kinds, as scan.py names them
enum { K_FN, K_STRUCT, K_ENUM, K_UNION, K_TRAIT, K_IMPL, K_CONST, K_STATIC, K_TYPE, K_MACRO, K_MOD, K_VARIANT,
       K_FIELD };
enum { R_CALL, R_TYPE, R_IMPORT };

typedef struct {
    int32_t kind, name_start, name_end, scope, trait_start, trait_end, start, end, sig_end, doc_start, doc_end,
        start_line, start_col, end_line, end_col;
} Def;

typedef struct { int32_t kind, start, end, line, col; } Ref;

int rust_scan(const uint8_t *src, int32_t n, Def *defs, int32_t max_defs, Ref *refs, int32_t max_refs,
              int32_t *counts);
int group_refs(const uint8_t *src, const Ref *refs, int32_t n, char *text, int32_t *groups);

enum { REF_PLACE_BYTES = 24 };   // " line:col" at most

// Bytes of the whitespace character at s, `left` bytes there (0: none): ASCII's and Unicode's White_Space, which
// tree-sitter skips too (rows.c adds what Python's str.isspace() adds)
static inline int space_len(const uint8_t *s, int64_t left) {
    if (s[0] == ' ' || (s[0] >= 9 && s[0] <= 13)) return 1;
    if (s[0] < 0x80 || left < 2) return 0;
    if (s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (left < 3) return 0;
    if ((s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) || (s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) ||
        (s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) ||
        (s[0] == 0xE2 && s[1] == 0x80 && (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))) return 3;
    return 0;
}

#endif
