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

static const char *uffd_feature_name(uint64_t feature)
{
	switch (feature) {
	case UFFD_FEATURE_PAGEFAULT_FLAG_WP:
		return "PAGEFAULT_FLAG_WP (5.7)";
	case UFFD_FEATURE_WP_HUGETLBFS_SHMEM:
		return "WP_HUGETLBFS_SHMEM (5.19)";
	case UFFD_FEATURE_WP_UNPOPULATED:
		return "WP_UNPOPULATED (6.4)";
	case UFFD_FEATURE_WP_ASYNC:
		return "WP_ASYNC (6.7)";
	default:
		return "unknown";
	}
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

