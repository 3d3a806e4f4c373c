/* SPDX-License-Identifier: MIT */
/*
 * The Vulkan sink of dirty-syncd: a device-local VkBuffer mirrors the shared
 * buffer.  Each upload is one command buffer with one vkCmdCopyBuffer whose
 * VkBufferCopy regions are the flush's regions, at the same offsets in the
 * source and the destination; the sink returns once its fence has signalled,
 * so that the daemon clears its marks only when the device has the data.
 *
 * The source of the copy is either
 *   - the shared buffer itself, imported as device memory with
 *     VK_EXT_external_memory_host where the device offers it (the mapping's
 *     address and the buffer's size must be multiples of
 *     minImportedHostPointerAlignment, and the memory type host-coherent):
 *     no copy on the host at all; or
 *   - a host-visible staging buffer as large as the shared buffer, into which
 *     the regions are copied first; where its memory is not host-coherent
 *     (or with flush=always), the ranges written are flushed with
 *     vkFlushMappedMemoryRanges, widened to nonCoherentAtomSize.
 *
 * Options (--sink), comma-separated:
 *   device=N          the Nth physical device (default: discrete, integrated,
 *                     virtual, then CPU)
 *   import=auto|on|off  the shared memory as the source where it can be
 *                     (auto), or else fail (on), or never (off)
 *   flush=auto|always flush the staging ranges where the memory is not
 *                     host-coherent (auto), or always: the non-coherent path
 *                     exercised on a device whose memory is coherent
 *   validate          the Khronos validation layer, required; every error it
 *                     reports fails the call that caused it
 *   timeout=MS        how long to wait for a fence (default 60000)
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <link.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vulkan/vulkan.h>

#include "syncd-sink.h"

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

struct vk_buffer {
	VkBuffer buffer;
	VkDeviceMemory memory;
	VkDeviceSize allocation_size;
	VkMemoryPropertyFlags flags;
	void *map; /* host-visible ones, mapped whole */
};

struct vk_options {
	long device;    /* -1: the best one */
	int import;     /* -1 off, 0 auto, 1 on */
	bool flush_always;
	bool validate;
	uint64_t timeout_ns;
};

struct vk_sink {
	struct vk_options options;
	VkInstance instance;
	VkDebugUtilsMessengerEXT messenger;
	VkPhysicalDevice physical;
	VkPhysicalDeviceProperties properties;
	VkPhysicalDeviceMemoryProperties memory;
	VkDevice device;
	VkQueue queue;
	uint32_t queue_family;
	VkCommandPool pool;
	VkCommandBuffer commands;
	VkFence fence;
	bool pending;                   /* submitted, its fence not yet seen signalled */
	struct vk_buffer target;        /* device-local: the mirror */
	struct vk_buffer staging;       /* host-visible source, unless imported */
	struct vk_buffer imported;      /* the shared memory itself */
	struct vk_buffer readback;      /* host-visible, made by the first read back */
	bool import;                    /* the source is imported */
	bool flush_ranges;              /* the staging ranges are flushed */
	void *own_map;                  /* an aligned mapping of the buffer, for the import */
	size_t own_map_len;
	VkBufferCopy *copies;           /* a flush's regions */
	VkMappedMemoryRange *ranges;    /* their flushes */
	size_t capacity;
	uint64_t validation_errors;     /* reported by the layer so far */
	uint64_t errors_seen;           /* those already turned into a failure */
};

/* The reason, into why, and -err. */
static int reason(char *why, size_t why_len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int reason(char *why, size_t why_len, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return -err;
}

static const char *result_name(VkResult r)
{
	switch (r) {
	case VK_SUCCESS: return "VK_SUCCESS";
	case VK_TIMEOUT: return "VK_TIMEOUT";
	case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
	case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
	case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
	case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
	case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
	case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
	case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
	case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
	case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
	case VK_ERROR_INVALID_EXTERNAL_HANDLE: return "VK_ERROR_INVALID_EXTERNAL_HANDLE";
	default: return "a VkResult";
	}
}

static int result_errno(VkResult r)
{
	switch (r) {
	case VK_SUCCESS: return 0;
	case VK_TIMEOUT: return ETIMEDOUT;
	case VK_ERROR_OUT_OF_HOST_MEMORY:
	case VK_ERROR_OUT_OF_DEVICE_MEMORY: return ENOMEM;
	case VK_ERROR_DEVICE_LOST: return EIO;
	case VK_ERROR_LAYER_NOT_PRESENT:
	case VK_ERROR_EXTENSION_NOT_PRESENT:
	case VK_ERROR_FEATURE_NOT_PRESENT: return EOPNOTSUPP;
	case VK_ERROR_INCOMPATIBLE_DRIVER: return ENODEV;
	case VK_ERROR_INVALID_EXTERNAL_HANDLE: return EINVAL;
	default: return EIO;
	}
}

/* A Vulkan call that failed: its reason and errno. */
static int vk_failed(char *why, size_t why_len, const char *call, VkResult r)
{
	return reason(why, why_len, result_errno(r), "%s: %s (%d)", call, result_name(r), (int)r);
}

/* The validation layer's messages: errors counted, and every one said. */
static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(
	VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
	const VkDebugUtilsMessengerCallbackDataEXT *data, void *userdata)
{
	struct vk_sink *v = userdata;

	(void)types;
	if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)
		v->validation_errors++;
	fprintf(stderr, "dirty-syncd: vulkan validation %s: %s\n",
		severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error" : "warning",
		data && data->pMessage ? data->pMessage : "(no message)");
	return VK_FALSE;
}

/* -EPROTO when the layer reported an error since the last check. */
static int validation_check(struct vk_sink *v, char *why, size_t why_len)
{
	if (v->validation_errors == v->errors_seen)
		return 0;
	v->errors_seen = v->validation_errors;
	return reason(why, why_len, EPROTO, "the validation layer reported an error (above)");
}

/* ---- options ---- */

static int parse_options(const char *spec, struct vk_options *o, char *why, size_t why_len)
{
	char *copy = strdup(spec), *save = NULL;
	int err = 0;

	*o = (struct vk_options){ .device = -1, .timeout_ns = 60ull * 1000000000 };
	if (!copy)
		return -ENOMEM;
	for (char *opt = strtok_r(copy, ",", &save); opt && !err; opt = strtok_r(NULL, ",", &save)) {
		char *value = strchr(opt, '='), *end;

		if (value)
			*value++ = 0;
		if (!strcmp(opt, "device") && value) {
			o->device = strtol(value, &end, 10);
			if (end == value || *end || o->device < 0)
				err = -EINVAL;
		} else if (!strcmp(opt, "import") && value) {
			o->import = !strcmp(value, "on") ? 1 : !strcmp(value, "off") ? -1 : 0;
			if (strcmp(value, "on") && strcmp(value, "off") && strcmp(value, "auto"))
				err = -EINVAL;
		} else if (!strcmp(opt, "flush") && value) {
			o->flush_always = !strcmp(value, "always");
			if (strcmp(value, "always") && strcmp(value, "auto"))
				err = -EINVAL;
		} else if (!strcmp(opt, "validate") && !value) {
			o->validate = true;
		} else if (!strcmp(opt, "timeout") && value) {
			unsigned long long ms = strtoull(value, &end, 10);

			if (end == value || *end || !ms || ms > 3600000)
				err = -EINVAL;
			o->timeout_ns = ms * 1000000;
		} else {
			err = -EINVAL;
		}
		if (err)
			reason(why, why_len, EINVAL, "unknown option or value \"%s%s%s\" (device=N, "
			       "import=auto|on|off, flush=auto|always, validate, timeout=MS)", opt,
			       value ? "=" : "", value ? value : "");
	}
	free(copy);
	return err;
}

/* ---- instance, device ---- */

static bool layer_present(const char *name)
{
	VkLayerProperties *layers;
	uint32_t n = 0;
	bool found = false;

	if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || !n)
		return false;
	layers = calloc(n, sizeof(*layers));
	if (layers && vkEnumerateInstanceLayerProperties(&n, layers) == VK_SUCCESS)
		for (uint32_t i = 0; i < n; i++)
			found |= !strcmp(layers[i].layerName, name);
	free(layers);
	return found;
}

static int create_instance(struct vk_sink *v, char *why, size_t why_len)
{
	VkDebugUtilsMessengerCreateInfoEXT messenger = {
		.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
		.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
				   VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
		.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
			       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT,
		.pfnUserCallback = on_validation_message,
		.pUserData = v,
	};
	const char *layer = VALIDATION_LAYER, *extension = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
	VkApplicationInfo app = {
		.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
		.pApplicationName = "dirty-syncd",
		.apiVersion = VK_API_VERSION_1_1,
	};
	VkInstanceCreateInfo info = {
		.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
		.pApplicationInfo = &app,
	};
	uint32_t loader = 0;
	VkResult r;

	if (vkEnumerateInstanceVersion(&loader) != VK_SUCCESS || loader < VK_API_VERSION_1_1)
		return reason(why, why_len, ENODEV, "the Vulkan loader is older than 1.1");
	if (v->options.validate) {
		if (!layer_present(VALIDATION_LAYER))
			return reason(why, why_len, ENOENT, "validate: the layer %s is not installed "
				      "(Debian: vulkan-validationlayers)", VALIDATION_LAYER);
		info.enabledLayerCount = 1;
		info.ppEnabledLayerNames = &layer;
		info.enabledExtensionCount = 1;
		info.ppEnabledExtensionNames = &extension;
		info.pNext = &messenger; /* what instance creation itself does, too */
	}
	r = vkCreateInstance(&info, NULL, &v->instance);
	if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED)
		return reason(why, why_len, ENODEV, "no Vulkan driver (vkCreateInstance: %s; "
			      "Mesa's software device: mesa-vulkan-drivers, VK_ICD_FILENAMES="
			      "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json)", result_name(r));
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkCreateInstance", r);
	if (v->options.validate) {
		PFN_vkCreateDebugUtilsMessengerEXT create = (PFN_vkCreateDebugUtilsMessengerEXT)
			vkGetInstanceProcAddr(v->instance, "vkCreateDebugUtilsMessengerEXT");

		if (!create)
			return reason(why, why_len, EOPNOTSUPP, "validate: no %s", extension);
		r = create(v->instance, &messenger, NULL, &v->messenger);
		if (r != VK_SUCCESS)
			return vk_failed(why, why_len, "vkCreateDebugUtilsMessengerEXT", r);
	}
	return 0;
}

/* The rank of a device type when none is named: a real GPU first. */
static int type_rank(VkPhysicalDeviceType type)
{
	switch (type) {
	case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
	case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
	case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
	case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
	default: return 0;
	}
}

static int choose_device(struct vk_sink *v, char *why, size_t why_len)
{
	VkPhysicalDevice *devices;
	uint32_t n = 0;
	int best = -1, best_rank = -1;
	VkResult r = vkEnumeratePhysicalDevices(v->instance, &n, NULL);

	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkEnumeratePhysicalDevices", r);
	if (!n)
		return reason(why, why_len, ENODEV, "no Vulkan device");
	devices = calloc(n, sizeof(*devices));
	if (!devices)
		return -ENOMEM;
	r = vkEnumeratePhysicalDevices(v->instance, &n, devices);
	if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
		free(devices);
		return vk_failed(why, why_len, "vkEnumeratePhysicalDevices", r);
	}
	for (uint32_t i = 0; i < n; i++) {
		VkPhysicalDeviceProperties p;

		vkGetPhysicalDeviceProperties(devices[i], &p);
		if (v->options.device >= 0) {
			if ((long)i == v->options.device)
				best = (int)i;
		} else if (type_rank(p.deviceType) > best_rank) {
			best = (int)i;
			best_rank = type_rank(p.deviceType);
		}
	}
	if (best >= 0)
		v->physical = devices[best];
	free(devices);
	if (best < 0)
		return reason(why, why_len, ENODEV, "no Vulkan device %ld (%u found)",
			      v->options.device, n);
	vkGetPhysicalDeviceProperties(v->physical, &v->properties);
	vkGetPhysicalDeviceMemoryProperties(v->physical, &v->memory);
	if (v->properties.apiVersion < VK_API_VERSION_1_1)
		return reason(why, why_len, ENODEV, "%s supports Vulkan %u.%u, not 1.1",
			      v->properties.deviceName, VK_API_VERSION_MAJOR(v->properties.apiVersion),
			      VK_API_VERSION_MINOR(v->properties.apiVersion));
	return 0;
}

/* A queue family that can copy: one for transfers alone (a DMA engine) first. */
static int choose_queue_family(struct vk_sink *v, char *why, size_t why_len)
{
	VkQueueFamilyProperties *families;
	uint32_t n = 0;
	int best = -1;

	vkGetPhysicalDeviceQueueFamilyProperties(v->physical, &n, NULL);
	families = calloc(n ? n : 1, sizeof(*families));
	if (!families)
		return -ENOMEM;
	vkGetPhysicalDeviceQueueFamilyProperties(v->physical, &n, families);
	for (uint32_t i = 0; i < n; i++) {
		VkQueueFlags f = families[i].queueFlags;
		/* graphics and compute queues can copy too, whether they say so or not */
		bool copies = f & (VK_QUEUE_TRANSFER_BIT | VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT);
		bool alone = !(f & (VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT));

		if (copies && families[i].queueCount && (best < 0 || alone))
			best = (int)i;
		if (copies && families[i].queueCount && alone)
			break;
	}
	free(families);
	if (best < 0)
		return reason(why, why_len, ENODEV, "%s has no queue that copies",
			      v->properties.deviceName);
	v->queue_family = (uint32_t)best;
	return 0;
}

static bool device_extension_present(VkPhysicalDevice physical, const char *name)
{
	VkExtensionProperties *extensions;
	uint32_t n = 0;
	bool found = false;

	if (vkEnumerateDeviceExtensionProperties(physical, NULL, &n, NULL) != VK_SUCCESS || !n)
		return false;
	extensions = calloc(n, sizeof(*extensions));
	if (extensions && vkEnumerateDeviceExtensionProperties(physical, NULL, &n, extensions) ==
	    VK_SUCCESS)
		for (uint32_t i = 0; i < n; i++)
			found |= !strcmp(extensions[i].extensionName, name);
	free(extensions);
	return found;
}

/* ---- memory ---- */

/* A memory type of bits with every flag of need, the one with most of want; -1 if none. */
static int memory_type(const struct vk_sink *v, uint32_t bits, VkMemoryPropertyFlags need,
		       VkMemoryPropertyFlags want)
{
	int best = -1, best_score = -1;

	for (uint32_t i = 0; i < v->memory.memoryTypeCount; i++) {
		VkMemoryPropertyFlags f = v->memory.memoryTypes[i].propertyFlags;
		int score = __builtin_popcount(f & want);

		if (!(bits & (1u << i)) || (f & need) != need)
			continue;
		if (score > best_score) {
			best = (int)i;
			best_score = score;
		}
	}
	return best;
}

/*
 * A buffer of size bytes for usage, with memory of a type that has need
 * (and most of want), mapped whole if host-visible; import: the memory is
 * the host memory at that address instead of an allocation.
 */
static int make_buffer(struct vk_sink *v, struct vk_buffer *b, VkDeviceSize size,
		       VkBufferUsageFlags usage, VkMemoryPropertyFlags need,
		       VkMemoryPropertyFlags want, void *import, char *why, size_t why_len)
{
	VkExternalMemoryBufferCreateInfo external = {
		.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
		.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
	};
	VkBufferCreateInfo info = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
		.pNext = import ? &external : NULL,
		.size = size,
		.usage = usage,
		.sharingMode = VK_SHARING_MODE_EXCLUSIVE,
	};
	VkImportMemoryHostPointerInfoEXT host = {
		.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
		.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
		.pHostPointer = import,
	};
	VkMemoryHostPointerPropertiesEXT pointer = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT,
	};
	VkMemoryAllocateInfo allocate = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
		.pNext = import ? &host : NULL,
	};
	VkMemoryRequirements needs;
	uint32_t bits;
	int type;
	VkResult r;

	r = vkCreateBuffer(v->device, &info, NULL, &b->buffer);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkCreateBuffer", r);
	vkGetBufferMemoryRequirements(v->device, b->buffer, &needs);
	bits = needs.memoryTypeBits;
	allocate.allocationSize = needs.size;
	if (import) {
		PFN_vkGetMemoryHostPointerPropertiesEXT properties =
			(PFN_vkGetMemoryHostPointerPropertiesEXT)vkGetDeviceProcAddr(
				v->device, "vkGetMemoryHostPointerPropertiesEXT");

		if (!properties)
			return reason(why, why_len, EOPNOTSUPP,
				      "no vkGetMemoryHostPointerPropertiesEXT");
		r = properties(v->device, host.handleType, import, &pointer);
		if (r != VK_SUCCESS)
			return vk_failed(why, why_len, "vkGetMemoryHostPointerPropertiesEXT", r);
		bits &= pointer.memoryTypeBits;
		/* the import covers the buffer as it is: the device may want no more */
		if (needs.size > size)
			return reason(why, why_len, EINVAL, "the buffer needs %" PRIu64 " bytes of "
				      "memory, more than the %" PRIu64 " imported",
				      (uint64_t)needs.size, (uint64_t)size);
		allocate.allocationSize = size;
	}
	type = memory_type(v, bits, need, want);
	if (type < 0)
		return reason(why, why_len, EOPNOTSUPP, "no memory type for a buffer of usage %#x "
			      "with properties %#x", (unsigned)usage, (unsigned)need);
	allocate.memoryTypeIndex = (uint32_t)type;
	r = vkAllocateMemory(v->device, &allocate, NULL, &b->memory);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, import ? "vkAllocateMemory (import)" :
				 "vkAllocateMemory", r);
	b->allocation_size = allocate.allocationSize;
	b->flags = v->memory.memoryTypes[type].propertyFlags;
	r = vkBindBufferMemory(v->device, b->buffer, b->memory, 0);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkBindBufferMemory", r);
	if (!import && (b->flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
		r = vkMapMemory(v->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->map);
		if (r != VK_SUCCESS)
			return vk_failed(why, why_len, "vkMapMemory", r);
	}
	return 0;
}

static void free_buffer(struct vk_sink *v, struct vk_buffer *b)
{
	if (b->map)
		vkUnmapMemory(v->device, b->memory);
	vkDestroyBuffer(v->device, b->buffer, NULL);
	vkFreeMemory(v->device, b->memory, NULL);
	*b = (struct vk_buffer){ 0 };
}

/*
 * Can the shared buffer be the copy's source?  0, or the reason it cannot
 * (-EOPNOTSUPP, why).  *align: minImportedHostPointerAlignment.
 */
static int import_possible(struct vk_sink *v, uint64_t size, VkDeviceSize *align, char *why,
			   size_t why_len)
{
	VkPhysicalDeviceExternalMemoryHostPropertiesEXT host = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT,
	};
	VkPhysicalDeviceProperties2 properties = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
		.pNext = &host,
	};
	VkPhysicalDeviceExternalBufferInfo buffer = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_BUFFER_INFO,
		.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
		.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
	};
	VkExternalBufferProperties external = {
		.sType = VK_STRUCTURE_TYPE_EXTERNAL_BUFFER_PROPERTIES,
	};

	if (!device_extension_present(v->physical, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME))
		return reason(why, why_len, EOPNOTSUPP, "the device lacks %s",
			      VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
	vkGetPhysicalDeviceProperties2(v->physical, &properties);
	*align = host.minImportedHostPointerAlignment;
	if (!*align || (*align & (*align - 1)) || size % *align)
		return reason(why, why_len, EOPNOTSUPP, "the buffer's size is not a multiple of "
			      "minImportedHostPointerAlignment (%" PRIu64 ")", (uint64_t)*align);
	vkGetPhysicalDeviceExternalBufferProperties(v->physical, &buffer, &external);
	if (!(external.externalMemoryProperties.externalMemoryFeatures &
	      VK_EXTERNAL_MEMORY_FEATURE_IMPORTABLE_BIT))
		return reason(why, why_len, EOPNOTSUPP, "host allocations cannot be imported as "
			      "a transfer source");
	return 0;
}

/*
 * The shared buffer's address for the import: the daemon's own mapping if
 * it is aligned enough, else a mapping of the buffer made here at an
 * aligned address (read-only: the device only reads it).
 */
static const void *aligned_source(struct vk_sink *v, const struct syncd_source *src,
				  VkDeviceSize align)
{
	unsigned char *reserve, *at;

	if ((uintptr_t)src->map % align == 0)
		return src->map;
	reserve = mmap(NULL, src->size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (reserve == MAP_FAILED)
		return NULL;
	at = reserve + (align - (uintptr_t)reserve % align) % align;
	if (mmap(at, src->size, PROT_READ, MAP_SHARED | MAP_FIXED, src->fd, 0) == MAP_FAILED) {
		munmap(reserve, src->size + align);
		return NULL;
	}
	/* what lies around the aligned mapping goes back */
	if (at > reserve)
		munmap(reserve, (size_t)(at - reserve));
	if (reserve + src->size + align > at + src->size)
		munmap(at + src->size, (size_t)(reserve + src->size + align - (at + src->size)));
	v->own_map = at;
	v->own_map_len = src->size;
	return at;
}

static int create_device(struct vk_sink *v, bool with_import, char *why, size_t why_len)
{
	const char *extension = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
	float priority = 1.0f;
	VkDeviceQueueCreateInfo queue = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
		.queueFamilyIndex = v->queue_family,
		.queueCount = 1,
		.pQueuePriorities = &priority,
	};
	VkDeviceCreateInfo info = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
		.queueCreateInfoCount = 1,
		.pQueueCreateInfos = &queue,
		.enabledExtensionCount = with_import,
		.ppEnabledExtensionNames = with_import ? &extension : NULL,
	};
	VkCommandPoolCreateInfo pool = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
		.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
		.queueFamilyIndex = v->queue_family,
	};
	VkCommandBufferAllocateInfo commands = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
		.commandPool = VK_NULL_HANDLE,
		.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
		.commandBufferCount = 1,
	};
	VkFenceCreateInfo fence = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
	VkResult r;

	r = vkCreateDevice(v->physical, &info, NULL, &v->device);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkCreateDevice", r);
	vkGetDeviceQueue(v->device, v->queue_family, 0, &v->queue);
	r = vkCreateCommandPool(v->device, &pool, NULL, &v->pool);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkCreateCommandPool", r);
	commands.commandPool = v->pool;
	r = vkAllocateCommandBuffers(v->device, &commands, &v->commands);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkAllocateCommandBuffers", r);
	r = vkCreateFence(v->device, &fence, NULL, &v->fence);
	if (r != VK_SUCCESS)
		return vk_failed(why, why_len, "vkCreateFence", r);
	return 0;
}

/* ---- submitting ---- */

/* Wait for the last submission's fence.  0, or -ETIMEDOUT (still pending), -EIO... */
static int wait_fence(struct vk_sink *v)
{
	VkResult r;

	if (!v->pending)
		return 0;
	r = vkWaitForFences(v->device, 1, &v->fence, VK_TRUE, v->options.timeout_ns);
	if (r == VK_TIMEOUT)
		return -ETIMEDOUT;
	if (r != VK_SUCCESS)
		return -result_errno(r);
	v->pending = false;
	return 0;
}

static int begin(struct vk_sink *v)
{
	VkCommandBufferBeginInfo info = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
	};
	/*
	 * What earlier submissions did to the mirror (a copy into it, a read
	 * back from it) comes before this one's copy into it.
	 */
	VkMemoryBarrier earlier = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT, /* reads need only the order */
		.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT,
	};
	VkResult r = vkResetCommandBuffer(v->commands, 0);

	if (r == VK_SUCCESS)
		r = vkBeginCommandBuffer(v->commands, &info);
	if (r != VK_SUCCESS)
		return -result_errno(r);
	vkCmdPipelineBarrier(v->commands, VK_PIPELINE_STAGE_TRANSFER_BIT,
			     VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &earlier, 0, NULL, 0, NULL);
	return 0;
}

/* End, submit, and wait for the fence: the device has done it when this returns 0. */
static int submit_and_wait(struct vk_sink *v)
{
	VkSubmitInfo submit = {
		.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
		.commandBufferCount = 1,
		.pCommandBuffers = &v->commands,
	};
	VkResult r = vkEndCommandBuffer(v->commands);

	if (r == VK_SUCCESS)
		r = vkResetFences(v->device, 1, &v->fence);
	if (r == VK_SUCCESS)
		r = vkQueueSubmit(v->queue, 1, &submit, v->fence);
	if (r != VK_SUCCESS)
		return -result_errno(r);
	v->pending = true;
	return wait_fence(v);
}

/*
 * The staging ranges written, flushed: each widened to nonCoherentAtomSize
 * (offset rounded down, end rounded up, or to the end of the memory), the
 * ones that then touch joined.
 */
static int flush_staging(struct vk_sink *v, const struct syncd_region *regions, size_t n)
{
	VkDeviceSize atom = v->properties.limits.nonCoherentAtomSize ?
			    v->properties.limits.nonCoherentAtomSize : 1;
	VkDeviceSize memory_end = v->staging.allocation_size;
	uint32_t count = 0;

	for (size_t i = 0; i < n; i++) {
		VkDeviceSize start = regions[i].offset - regions[i].offset % atom;
		VkDeviceSize end = regions[i].offset + regions[i].len;

		end = end % atom ? end - end % atom + atom : end;
		if (end > memory_end)
			end = memory_end;
		if (count && start <= v->ranges[count - 1].offset + v->ranges[count - 1].size) {
			v->ranges[count - 1].size = end - v->ranges[count - 1].offset;
			continue;
		}
		v->ranges[count++] = (VkMappedMemoryRange){
			.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
			.memory = v->staging.memory,
			.offset = start,
			.size = end - start,
		};
	}
	return count ? -result_errno(vkFlushMappedMemoryRanges(v->device, count, v->ranges)) : 0;
}

static int vulkan_upload(struct syncd_sink *s, const struct syncd_region *regions, size_t n)
{
	struct vk_sink *v = s->priv;
	char why[256];
	int err;

	if (n > v->capacity || n > UINT32_MAX)
		return -E2BIG;
	err = wait_fence(v); /* a submission that timed out earlier */
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		if (!regions[i].len || regions[i].offset >= s->size ||
		    regions[i].len > s->size - regions[i].offset)
			return -ERANGE;
		v->copies[i] = (VkBufferCopy){ regions[i].offset, regions[i].offset, regions[i].len };
		if (!v->import)
			memcpy((unsigned char *)v->staging.map + regions[i].offset,
			       s->src->map + regions[i].offset, regions[i].len);
	}
	if (!v->import && v->flush_ranges) {
		err = flush_staging(v, regions, n);
		if (err)
			return err;
	}
	err = begin(v);
	if (err)
		return err;
	vkCmdCopyBuffer(v->commands, v->import ? v->imported.buffer : v->staging.buffer,
			v->target.buffer, (uint32_t)n, v->copies);
	err = submit_and_wait(v);
	if (!err)
		err = validation_check(v, why, sizeof(why));
	return err;
}

static int vulkan_read_back(struct syncd_sink *s, int fd)
{
	struct vk_sink *v = s->priv;
	/* the copy's writes, made visible to the host's reads */
	VkMemoryBarrier to_host = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
		.dstAccessMask = VK_ACCESS_HOST_READ_BIT,
	};
	VkBufferCopy whole = { 0, 0, s->size };
	char why[256];
	int err = wait_fence(v);

	if (!err && !v->readback.buffer)
		err = make_buffer(v, &v->readback, s->size, VK_BUFFER_USAGE_TRANSFER_DST_BIT,
				  VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
				  VK_MEMORY_PROPERTY_HOST_CACHED_BIT |
				  VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, NULL, why, sizeof(why));
	if (!err)
		err = begin(v);
	if (err)
		return err;
	vkCmdCopyBuffer(v->commands, v->target.buffer, v->readback.buffer, 1, &whole);
	vkCmdPipelineBarrier(v->commands, VK_PIPELINE_STAGE_TRANSFER_BIT,
			     VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0, NULL, 0, NULL);
	err = submit_and_wait(v);
	if (!err && !(v->readback.flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)) {
		VkMappedMemoryRange all = {
			.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
			.memory = v->readback.memory,
			.size = VK_WHOLE_SIZE,
		};

		err = -result_errno(vkInvalidateMappedMemoryRanges(v->device, 1, &all));
	}
	if (!err)
		err = validation_check(v, why, sizeof(why));
	if (!err)
		err = syncd_pwrite_all(fd, v->readback.map, (size_t)s->size, 0);
	return err;
}

static int pin(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	if (info->dlpi_name && info->dlpi_name[0])
		(void)dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
	return 0;
}

/*
 * Keep every library loaded (the driver, its LLVM, the layers) when the
 * loader lets them go at vkDestroyInstance.  The sink closes only as the
 * program ends, so unloading them gains nothing; and a leak checker (LSan,
 * valgrind) that runs at exit no longer sees the memory a library's globals
 * still point to once the library is gone, and calls it leaked.
 */
static void pin_libraries(void)
{
	dl_iterate_phdr(pin, NULL);
}

static void vulkan_close(struct syncd_sink *s)
{
	struct vk_sink *v = s->priv;

	if (!v)
		return;
	if (v->device) {
		vkDeviceWaitIdle(v->device);
		free_buffer(v, &v->readback);
		free_buffer(v, &v->staging);
		free_buffer(v, &v->imported);
		free_buffer(v, &v->target);
		vkDestroyFence(v->device, v->fence, NULL);
		vkDestroyCommandPool(v->device, v->pool, NULL);
		vkDestroyDevice(v->device, NULL);
	}
	if (v->messenger) {
		PFN_vkDestroyDebugUtilsMessengerEXT destroy = (PFN_vkDestroyDebugUtilsMessengerEXT)
			vkGetInstanceProcAddr(v->instance, "vkDestroyDebugUtilsMessengerEXT");

		if (destroy)
			destroy(v->instance, v->messenger, NULL);
	}
	if (v->instance) {
		pin_libraries();
		vkDestroyInstance(v->instance, NULL);
	}
	if (v->own_map)
		munmap(v->own_map, v->own_map_len);
	free(v->copies);
	free(v->ranges);
	free(v);
	s->priv = NULL;
}

/*
 * The copy's source: the shared memory imported where it can be (try_import:
 * import_possible() said yes), else a staging buffer.  how says which, and
 * why not (no_import, or what went wrong with the import).
 */
static int make_source(struct vk_sink *v, const struct syncd_source *src, bool try_import,
		       VkDeviceSize align, const char *no_import, char *how, size_t how_len,
		       char *why, size_t why_len)
{
	char cannot[256] = "";
	int err;

	if (try_import) {
		const void *at = aligned_source(v, src, align);

		err = at ? make_buffer(v, &v->imported, src->size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
				       VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0, (void *)at, cannot,
				       sizeof(cannot)) :
			   reason(cannot, sizeof(cannot), errno, "an aligned mapping: %s",
				  strerror(errno));
		if (!err) {
			v->import = true;
			snprintf(how, how_len, "the shared buffer imported (%s, "
				 "minImportedHostPointerAlignment %" PRIu64 ")",
				 VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME, (uint64_t)align);
			return 0;
		}
		free_buffer(v, &v->imported);
		if (v->options.import > 0)
			return reason(why, why_len, ENODEV, "import=on: %s", cannot);
		no_import = cannot;
	}
	err = make_buffer(v, &v->staging, src->size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
			  VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
			  NULL, why, why_len);
	if (err)
		return err;
	v->flush_ranges = v->options.flush_always ||
			  !(v->staging.flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
	snprintf(how, how_len, "a staging buffer, %s (not imported: %s)",
		 v->flush_ranges ? "its ranges flushed to nonCoherentAtomSize" : "host-coherent",
		 no_import);
	return 0;
}

static int vulkan_open(struct syncd_sink *s, const char *spec, char *why, size_t why_len)
{
	struct vk_sink *v = calloc(1, sizeof(*v));
	uint64_t npages = s->size / s->src->page_size;
	VkDeviceSize align = 0;
	char how[384] = "", cannot[256] = "import=off";
	bool try_import;
	int err;

	if (!v)
		return -ENOMEM;
	s->priv = v;
	err = parse_options(spec, &v->options, why, why_len);
	if (!err)
		err = create_instance(v, why, why_len);
	if (!err)
		err = choose_device(v, why, why_len);
	if (!err)
		err = choose_queue_family(v, why, why_len);
	if (err)
		goto fail;
	try_import = v->options.import >= 0 &&
		     !import_possible(v, s->size, &align, cannot, sizeof(cannot));
	if (v->options.import > 0 && !try_import) {
		err = reason(why, why_len, ENODEV, "import=on: %s", cannot);
		goto fail;
	}
	err = create_device(v, try_import, why, why_len);
	if (!err)
		err = make_buffer(v, &v->target, s->size,
				  VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
				  0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, NULL, why, why_len);
	if (!err)
		err = make_source(v, s->src, try_import, align, cannot, how, sizeof(how), why,
				  why_len);
	if (err)
		goto fail;
	v->capacity = syncd_max_runs(npages);
	v->copies = calloc(v->capacity, sizeof(*v->copies));
	v->ranges = calloc(v->capacity, sizeof(*v->ranges));
	if (!v->copies || !v->ranges) {
		err = -ENOMEM;
		goto fail;
	}
	/* one vkCmdCopyBuffer takes a 32-bit count of regions */
	if (!s->max_regions || s->max_regions > UINT32_MAX)
		s->max_regions = UINT32_MAX;
	err = validation_check(v, why, why_len);
	if (err)
		goto fail;
	snprintf(s->description, sizeof(s->description), "%s (Vulkan %u.%u), a device-local "
		 "buffer of %" PRIu64 " bytes, copied from %s, queue family %u%s", v->properties.deviceName,
		 VK_API_VERSION_MAJOR(v->properties.apiVersion),
		 VK_API_VERSION_MINOR(v->properties.apiVersion), s->size, how, v->queue_family,
		 v->options.validate ? ", validation layer on" : "");
	return 0;
fail:
	vulkan_close(s);
	return err;
}

const struct syncd_sink_ops syncd_vulkan_sink = {
	.name = "vulkan",
	.open = vulkan_open,
	.upload = vulkan_upload,
	.read_back = vulkan_read_back,
	.close = vulkan_close,
};
