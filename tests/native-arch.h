/* SPDX-License-Identifier: MIT */
/* This machine's audit architecture, as seccomp_data.arch gives it (for the tests' filters). */
#ifndef LIBDIRTY_TESTS_NATIVE_ARCH_H
#define LIBDIRTY_TESTS_NATIVE_ARCH_H

#include <linux/audit.h>

#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture's AUDIT_ARCH_*"
#endif

#endif
