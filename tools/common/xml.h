/* SPDX-License-Identifier: MIT */
/* XML text, for the tools' SVGs. */
#ifndef TOOLS_XML_H
#define TOOLS_XML_H

#include <stdio.h>

/*
 * Write s as XML character data, fit for an element or a quoted attribute:
 * the five specials escaped, and the control characters that XML 1.0 forbids
 * even escaped (all below 0x20 but tab and newline) written as '?'.  NULL
 * writes nothing.  Other bytes go out as they are: s is expected to be valid
 * UTF-8 (the heatmap cleans its names first).
 */
void xml_text(FILE *f, const char *s);

#endif
