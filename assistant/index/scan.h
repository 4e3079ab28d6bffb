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

#endif
