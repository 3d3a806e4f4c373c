/* SPDX-License-Identifier: MIT */
/* JSON strings, for the tools' reports and event lines. */
#ifndef TOOLS_JSON_H
#define TOOLS_JSON_H

#include <stdio.h>

/*
 * Write s as a JSON string: in quotes, with '"', '\' and the control
 * characters (below 0x20, and 0x7f) escaped; NULL is written as null.  The
 * other bytes go out as they are: s is expected to be UTF-8.
 */
void json_string(FILE *f, const char *s);

#endif
