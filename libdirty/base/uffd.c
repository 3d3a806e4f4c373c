/* SPDX-License-Identifier: MIT */
/*
 * Opening a userfaultfd and asking it for features: what the uffd backends,
 * their probes and the remote injection share.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "libdirty-int.h"
#include "linux-compat.h"

/* /dev/userfaultfd (6.1+): governed by its file mode, not the sysctl; -1 (errno) if refused */
static int uffd_from_device(int flags)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC), fd, err;

	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	err = errno;
	close(dev);
	errno = err;
	return fd;
}

int dirty_uffd_new(int flags, bool kernel_faults, bool *ret_user_only, char *why,
		   size_t why_len)
{
	int fd, err;

	if (ret_user_only)
		*ret_user_only = false;
	if (kernel_faults) {
		fd = (int)syscall(SYS_userfaultfd, flags);
		if (fd >= 0)
			return fd;
		if (errno != ENOSYS) {
			fd = uffd_from_device(flags);
			if (fd >= 0)
				return fd;
		}
	}
	fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	if (fd >= 0) {
		if (ret_user_only)
			*ret_user_only = true;
		return fd;
	}
	if (errno == EINVAL) /* before 5.11: no UFFD_USER_MODE_ONLY */
		fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd < 0 && errno != ENOSYS && !kernel_faults)
		fd = uffd_from_device(flags);
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == ENOSYS)
		return dirty_reason(why, why_len, -ENOSYS,
				    "the kernel has no userfaultfd (CONFIG_USERFAULTFD is off)");
	if (err == EPERM || err == EACCES)
		return dirty_reason(why, why_len, -EPERM,
				    "userfaultfd is not permitted: vm.unprivileged_userfaultfd=0 "
				    "without CAP_SYS_PTRACE, and /dev/userfaultfd is not accessible");
	return dirty_reason(why, why_len, -err, "userfaultfd() failed: %s", strerror(err));
}

int dirty_uffd_open(int flags, char *why, size_t why_len)
{
	return dirty_uffd_new(flags, false, NULL, why, why_len);
}

uint64_t dirty_uffd_features(void)
{
	static _Atomic uint64_t cached;
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t features = atomic_load(&cached);
	int fd;

	if (features)
		return features;
	fd = dirty_uffd_open(O_CLOEXEC, NULL, 0);
	if (fd < 0)
		return 0;
	if (ioctl(fd, UFFDIO_API, &api) == 0)
		features = api.features;
	close(fd);
	atomic_store(&cached, features);
	return features;
}

/* Every feature UFFDIO_API reports, with the release that brought it. */
static const struct {
	uint64_t feature;
	const char *name;
} uffd_feature_names[] = {
#if defined(__aarch64__)
	/* arm64 selects HAVE_ARCH_USERFAULTFD_WP from 6.10 */
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP (5.7; arm64 6.10)" },
#else
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP (5.7)" },
#endif
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS (5.13)" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM (5.14)" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS (5.18)" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM (5.19)" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED (6.4)" },
	{ UFFD_FEATURE_POISON, "POISON (6.6)" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC (6.7)" },
	{ UFFD_FEATURE_MOVE, "MOVE (6.8)" },
	{ UFFD_FEATURE_RWP, "RWP (7.2)" },
	{ UFFD_FEATURE_RWP_ASYNC, "RWP_ASYNC (7.2)" },
};

static const char *uffd_feature_name(uint64_t feature)
{
	for (size_t i = 0; i < sizeof(uffd_feature_names) / sizeof(uffd_feature_names[0]); i++)
		if (uffd_feature_names[i].feature == feature)
			return uffd_feature_names[i].name;
	return "unknown";
}

int dirty_uffd_feature_list(char *buf, size_t len)
{
	uint64_t features = dirty_uffd_features();
	size_t used = 0;
	int count = 0;

	if (len)
		buf[0] = '\0';
	if (!features)
		return -ENOSYS;
	for (int bit = 0; bit < 64; bit++) {
		uint64_t f = UINT64_C(1) << bit;
		const char *name;
		size_t n;

		if (!(features & f))
			continue;
		count++;
		name = uffd_feature_name(f);
		n = strcspn(name, " "); /* the name without its release */
		if (!strcmp(name, "unknown")) {
			if (len && used + 24 < len)
				used += (size_t)snprintf(buf + used, len - used, "%sbit %d",
							 used ? ", " : "", bit);
		} else if (len && used + n + 3 < len) {
			used += (size_t)snprintf(buf + used, len - used, "%s%.*s", used ? ", " : "",
						 (int)n, name);
		}
	}
	return count;
}

int dirty_uffd_api(int uffd, uint64_t features, char *why, size_t why_len)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	char names[160];
	uint64_t missing;
	int probe_fd, bit;
	size_t used;

	if (ioctl(uffd, UFFDIO_API, &api) == 0)
		return 0;
	if (errno != EINVAL)
		return dirty_reason(why, why_len, -errno, "UFFDIO_API failed: %s",
				    strerror(errno));
	/* find out which feature is missing, on a scratch fd (API is once per fd) */
	probe_fd = dirty_uffd_open(O_CLOEXEC, NULL, 0);
	api = (struct uffdio_api){ .api = UFFD_API };
	if (probe_fd < 0 || ioctl(probe_fd, UFFDIO_API, &api) < 0) {
		if (probe_fd >= 0)
			close(probe_fd);
		return dirty_reason(why, why_len, -EOPNOTSUPP, "UFFDIO_API refused the features");
	}
	close(probe_fd);
	missing = features & ~(uint64_t)api.features;
	/*
	 * Every write-protect feature needs write-protection itself, which the
	 * kernel withholds where the architecture lacks it (arm64 before 6.10):
	 * name that first, as the reason the others are missing.
	 */
	if ((features & (UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED |
			 UFFD_FEATURE_WP_ASYNC)) &&
	    !(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
		missing |= UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	if (!missing)
		return dirty_reason(why, why_len, -EOPNOTSUPP, "UFFDIO_API refused the features");
	/* name every missing feature: "WP_UNPOPULATED (6.4), WP_ASYNC (6.7)" */
	used = (size_t)snprintf(names, sizeof(names), "%s", "");
	for (bit = 0; bit < 64; bit++)
		if ((missing & (UINT64_C(1) << bit)) && used < sizeof(names))
			used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
						 used ? ", " : "",
						 uffd_feature_name(UINT64_C(1) << bit));
	return dirty_reason(why, why_len, -EOPNOTSUPP, "the kernel lacks userfaultfd feature%s %s",
			    missing & (missing - 1) ? "s" : "", names);
}

