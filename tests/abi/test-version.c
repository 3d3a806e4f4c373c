/* SPDX-License-Identifier: MIT */
/*
 * dirty_version() is the version meson built the library as, and the
 * header's macros say the same.
 *
 *   test-version PROJECT_VERSION
 */
#include <stdio.h>
#include <string.h>

#include <libdirty.h>

static int failures;

static void expect(int ok, const char *what)
{
	printf("%s - %s\n", ok ? "ok" : "not ok", what);
	failures += !ok;
}

int main(int argc, char **argv)
{
	char from_macros[64];
	const char *v = dirty_version();

	if (argc != 2) {
		fprintf(stderr, "usage: %s PROJECT_VERSION\n", argv[0]);
		return 2;
	}
	printf("# dirty_version() \"%s\", LIBDIRTY_VERSION_STRING \"%s\", meson \"%s\"\n",
	       v ? v : "(null)", LIBDIRTY_VERSION_STRING, argv[1]);
	expect(v != NULL, "dirty_version() is not NULL");
	if (!v)
		return 1;
	expect(!strcmp(v, argv[1]), "dirty_version() is meson's project version");
	expect(!strcmp(LIBDIRTY_VERSION_STRING, argv[1]),
	       "LIBDIRTY_VERSION_STRING is meson's project version");
	snprintf(from_macros, sizeof(from_macros), "%d.%d.%d", LIBDIRTY_VERSION_MAJOR,
		 LIBDIRTY_VERSION_MINOR, LIBDIRTY_VERSION_MICRO);
	expect(!strcmp(from_macros, argv[1]), "MAJOR.MINOR.MICRO is meson's project version");
	expect(dirty_version() == v, "dirty_version() returns the same static string");
	expect(LIBDIRTY_CHECK_VERSION(LIBDIRTY_VERSION_MAJOR, LIBDIRTY_VERSION_MINOR,
				      LIBDIRTY_VERSION_MICRO),
	       "LIBDIRTY_CHECK_VERSION() of its own version");
	expect(LIBDIRTY_CHECK_VERSION(0, 0, 0), "LIBDIRTY_CHECK_VERSION(0, 0, 0)");
	expect(!LIBDIRTY_CHECK_VERSION(LIBDIRTY_VERSION_MAJOR, LIBDIRTY_VERSION_MINOR,
				       LIBDIRTY_VERSION_MICRO + 1),
	       "not LIBDIRTY_CHECK_VERSION() of the next micro version");
	expect(!LIBDIRTY_CHECK_VERSION(LIBDIRTY_VERSION_MAJOR, LIBDIRTY_VERSION_MINOR + 1, 0),
	       "not LIBDIRTY_CHECK_VERSION() of the next minor version");
	expect(!LIBDIRTY_CHECK_VERSION(LIBDIRTY_VERSION_MAJOR + 1, 0, 0),
	       "not LIBDIRTY_CHECK_VERSION() of the next major version");
	return failures ? 1 : 0;
}
