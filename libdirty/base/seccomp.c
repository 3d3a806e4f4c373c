/* SPDX-License-Identifier: MIT */
/*
 * What a seccomp filter decides for one system call, worked out here rather
 * than found out by making the call.
 *
 * remote.c runs system calls inside another process; a filter of that
 * process may answer one of them by killing it, or by a SIGSYS it never
 * asked for.  PTRACE_SECCOMP_GET_FILTER hands out each filter as the
 * classic BPF program the process installed, and this runs such a program
 * on a struct seccomp_data exactly as the kernel does (kernel/seccomp.c:
 * seccomp_check_filter() says which instructions a filter may hold,
 * net/core/filter.c converts them; the differences that matter are noted
 * below), so that the caller knows the verdict before the call is made.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <string.h>

#include "libdirty-int.h"

#define SECCOMP_DATA_SIZE ((uint32_t)sizeof(struct seccomp_data))

int dirty_seccomp_run(const struct sock_filter *prog, size_t len, const struct seccomp_data *sd,
		      uint32_t *ret)
{
	uint32_t words[sizeof(struct seccomp_data) / 4];
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = { 0 };
	size_t pc = 0;

	if (!len || len > BPF_MAXINSNS)
		return -EINVAL;
	memcpy(words, sd, sizeof(words));
	while (pc < len) {
		const struct sock_filter *in = &prog[pc++];
		uint32_t k = in->k;
		size_t skip = 0;

		switch (in->code) {
		case BPF_LD | BPF_W | BPF_ABS:
			/* the only load from the data: aligned 32-bit words */
			if (k >= SECCOMP_DATA_SIZE || k & 3)
				return -EINVAL;
			a = words[k / 4];
			break;
		case BPF_LD | BPF_W | BPF_LEN:
			a = SECCOMP_DATA_SIZE;
			break;
		case BPF_LDX | BPF_W | BPF_LEN:
			x = SECCOMP_DATA_SIZE;
			break;
		case BPF_LD | BPF_IMM:
			a = k;
			break;
		case BPF_LDX | BPF_IMM:
			x = k;
			break;
		case BPF_LD | BPF_MEM:
		case BPF_LDX | BPF_MEM:
		case BPF_ST:
		case BPF_STX:
			if (k >= BPF_MEMWORDS)
				return -EINVAL;
			if (in->code == (BPF_LD | BPF_MEM))
				a = mem[k];
			else if (in->code == (BPF_LDX | BPF_MEM))
				x = mem[k];
			else
				mem[k] = in->code == BPF_ST ? a : x;
			break;
		case BPF_MISC | BPF_TAX:
			x = a;
			break;
		case BPF_MISC | BPF_TXA:
			a = x;
			break;
		case BPF_ALU | BPF_NEG:
			a = (uint32_t)-a;
			break;
		case BPF_ALU | BPF_ADD | BPF_K:
		case BPF_ALU | BPF_ADD | BPF_X:
			a += BPF_SRC(in->code) == BPF_X ? x : k;
			break;
		case BPF_ALU | BPF_SUB | BPF_K:
		case BPF_ALU | BPF_SUB | BPF_X:
			a -= BPF_SRC(in->code) == BPF_X ? x : k;
			break;
		case BPF_ALU | BPF_MUL | BPF_K:
		case BPF_ALU | BPF_MUL | BPF_X:
			a *= BPF_SRC(in->code) == BPF_X ? x : k;
			break;
		case BPF_ALU | BPF_DIV | BPF_K:
			if (!k)
				return -EINVAL; /* the kernel refuses the program */
			a /= k;
			break;
		case BPF_ALU | BPF_DIV | BPF_X:
			/* classic BPF: a division by zero ends the program with 0 (KILL_THREAD) */
			if (!x) {
				*ret = 0;
				return 0;
			}
			a /= x;
			break;
		case BPF_ALU | BPF_AND | BPF_K:
		case BPF_ALU | BPF_AND | BPF_X:
			a &= BPF_SRC(in->code) == BPF_X ? x : k;
			break;
		case BPF_ALU | BPF_OR | BPF_K:
		case BPF_ALU | BPF_OR | BPF_X:
			a |= BPF_SRC(in->code) == BPF_X ? x : k;
			break;
		case BPF_ALU | BPF_XOR | BPF_K:
		case BPF_ALU | BPF_XOR | BPF_X:
			a ^= BPF_SRC(in->code) == BPF_X ? x : k;
			break;
		case BPF_ALU | BPF_LSH | BPF_K:
		case BPF_ALU | BPF_RSH | BPF_K:
			if (k >= 32)
				return -EINVAL; /* refused by bpf_check_classic() */
			a = BPF_OP(in->code) == BPF_LSH ? a << k : a >> k;
			break;
		case BPF_ALU | BPF_LSH | BPF_X:
		case BPF_ALU | BPF_RSH | BPF_X:
			/* a 32-bit shift by a register takes its low 5 bits (x86-64, arm64) */
			a = BPF_OP(in->code) == BPF_LSH ? a << (x & 31) : a >> (x & 31);
			break;
		case BPF_JMP | BPF_JA:
			skip = k;
			break;
		case BPF_JMP | BPF_JEQ | BPF_K:
		case BPF_JMP | BPF_JEQ | BPF_X:
			skip = a == (BPF_SRC(in->code) == BPF_X ? x : k) ? in->jt : in->jf;
			break;
		case BPF_JMP | BPF_JGT | BPF_K:
		case BPF_JMP | BPF_JGT | BPF_X:
			skip = a > (BPF_SRC(in->code) == BPF_X ? x : k) ? in->jt : in->jf;
			break;
		case BPF_JMP | BPF_JGE | BPF_K:
		case BPF_JMP | BPF_JGE | BPF_X:
			skip = a >= (BPF_SRC(in->code) == BPF_X ? x : k) ? in->jt : in->jf;
			break;
		case BPF_JMP | BPF_JSET | BPF_K:
		case BPF_JMP | BPF_JSET | BPF_X:
			skip = a & (BPF_SRC(in->code) == BPF_X ? x : k) ? in->jt : in->jf;
			break;
		case BPF_RET | BPF_K:
			*ret = k;
			return 0;
		case BPF_RET | BPF_A:
			*ret = a;
			return 0;
		default:
			return -EINVAL; /* not an instruction a seccomp filter may hold */
		}
		/* jumps go forward only, and stay inside the program */
		if (skip >= len - pc)
			return -EINVAL;
		pc += skip;
	}
	return -EINVAL; /* fell off the end: the kernel wants a return last */
}

/* The kernel's ACTION_ONLY(): the lower action, as a signed number, wins. */
static int32_t action_rank(uint32_t ret)
{
	return (int32_t)(ret & SECCOMP_RET_ACTION_FULL);
}

uint32_t dirty_seccomp_combine(uint32_t older, uint32_t newer)
{
	/* seccomp_run_filters() goes from the newest and keeps the first lowest */
	return action_rank(newer) <= action_rank(older) ? newer : older;
}

bool dirty_seccomp_allows(uint32_t ret)
{
	uint32_t action = ret & SECCOMP_RET_ACTION_FULL;

	/* anything else, unknown values included, is not a plain "go on" (kernel: default kills) */
	return action == SECCOMP_RET_ALLOW || action == SECCOMP_RET_LOG;
}

const char *dirty_seccomp_action_name(uint32_t ret)
{
	switch (ret & SECCOMP_RET_ACTION_FULL) {
	case SECCOMP_RET_KILL_PROCESS:
		return "kill the process (SECCOMP_RET_KILL_PROCESS)";
	case SECCOMP_RET_KILL_THREAD:
		return "kill the thread (SECCOMP_RET_KILL_THREAD)";
	case SECCOMP_RET_TRAP:
		return "send it SIGSYS (SECCOMP_RET_TRAP)";
	case SECCOMP_RET_ERRNO:
		return "make the call fail (SECCOMP_RET_ERRNO)";
	case SECCOMP_RET_USER_NOTIF:
		return "hold the call for a supervisor (SECCOMP_RET_USER_NOTIF)";
	case SECCOMP_RET_TRACE:
		return "hand the call to a tracer (SECCOMP_RET_TRACE)";
	case SECCOMP_RET_LOG:
		return "log and allow the call (SECCOMP_RET_LOG)";
	case SECCOMP_RET_ALLOW:
		return "allow the call";
	default:
		return "kill the process (an unknown action)";
	}
}
