/*
 * topo-capture: the NUMA lab's topology artifacts, in one directory.
 *
 *   topo-capture [--out DIR] [--topology FILE.xml | --synthetic DESC]
 *
 * Writes into DIR (default benchmarks/, created):
 *   lscpu_day05.txt           `lscpu -e`, or the same per-PU facts from hwloc
 *   numa_day05.txt            `numactl --hardware`, or the same facts from
 *                             libnuma (hwloc for a topology file)
 *   lstopo_day05.txt          `lstopo-no-graphics --of console`, or a dump of
 *                             the hwloc tree written here
 *   nvidia_smi_topo_day05.txt `nvidia-smi topo -m`, only where it exists and
 *                             succeeds
 *   summary.md                the machine, then "GPU N is on NUMA node X,
 *                             nearest cores are Y-Z" per GPU, or "No GPU
 *                             found." and the nodes and cores the engine's
 *                             CPU backend would use
 *
 * The hwloc topology and the GPU list are the engine's own
 * (plan_topology_load, plan_resolve_ex): the GPUs, their numbers and their
 * nodes are the ones `engine --check-config` plans with. A GPU's nearest
 * cores are the cpuset of its first non-I/O ancestor in that topology.
 * With --topology / --synthetic the facts come from that topology and no
 * command that reads this machine (lscpu, numactl, nvidia-smi) runs.
 *
 *   topo-capture --emit-configs DIR [--model PATH] [--base-port 8080]
 *                [--lb-port 8000] [--backend auto|cpu|cuda|null]
 *                [--topology FILE.xml | --synthetic DESC] [--template FILE]
 *
 * Writes, for the same topology, what serving it with one engine per NUMA
 * node (or per GPU) behind nginx takes: nodeN.conf (or gpuN.conf) derived
 * from configs/node0.conf with the placement the engine's own plan gives,
 * nginx-locus.conf (least_conn, passive health checks, unbuffered SSE) and
 * engine@.service (a systemd template unit). Each config is read back and
 * planned on the topology before anything is written.
 *
 * Exit: 0, 1 on failure (a message on stderr), 2 on usage errors.
 * Single-threaded; no global state. The emit half lives in
 * tools/topo/emit_configs.c (topo.h), linked into this program.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hwloc.h>
#include <numa.h>

#include "alloc/alloc.h"
#include "engine/config.h"
#include "tools/topo/topo.h"

#define CMD_TIMEOUT_MS   (60 * 1000)
#define NVIDIA_VENDOR_ID 0x10de

extern char **environ;

struct capture {
	const char *out_dir;
	const char *xml;       /* --topology */
	const char *synthetic; /* --synthetic */
	const char *desc;      /* whichever was given, as plan_resolve takes it; NULL: this machine */
	bool this_machine;     /* facts (and commands) from the running machine */
	hwloc_topology_t t;
	struct plan plan; /* the default configuration's plan, without a model */
	int plan_rc;
	char plan_err[512];
	char how_lscpu[512], how_numa[512], how_lstopo[512], how_smi[512];
	bool smi_written;
	char files[5][PATH_MAX + 64]; /* "DIR/name (source)" lines for stdout */
	int n_files;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: topo-capture [--out DIR] [--topology FILE.xml | --synthetic DESC]\n"
	           "  --out DIR            where to write (default benchmarks/; created)\n"
	           "  --topology FILE.xml  describe an hwloc XML topology (lstopo FILE.xml) instead of this\n"
	           "                       machine; lscpu, numactl and nvidia-smi are not run\n"
	           "  --synthetic DESC     the same for an hwloc synthetic topology, e.g. \"pack:2 core:4 pu:1\"\n"
	           "Writes lscpu_day05.txt, numa_day05.txt, lstopo_day05.txt, nvidia_smi_topo_day05.txt\n"
	           "(only where nvidia-smi works) and summary.md: the machine, then \"GPU N is on NUMA node X,\n"
	           "nearest cores are Y-Z\" per GPU (the engine's GPU numbers), or \"No GPU found.\" and the NUMA\n"
	           "nodes and cores the engine's CPU backend would use. Prints one line per file written,\n"
	           "then those sentences. Exit 0, 1 on failure, 2 on usage errors.\n"
	           "topo-capture --emit-configs DIR ... writes engine configs, nginx and systemd files for\n"
	           "one engine per NUMA node or GPU (see topo-capture --emit-configs DIR --help).\n");
}

/* ---- small helpers ---- */

/* "0-15,32-47" (hwloc's list format); "none" for an empty set. Caller frees. */
static char *set_list(hwloc_const_bitmap_t set)
{
	char *s = NULL;
	if (!set || hwloc_bitmap_iszero(set))
		return strdup("none");
	if (hwloc_bitmap_list_asprintf(&s, set) < 0)
		return NULL;
	return s;
}

static char *ints_list(const int *v, int n)
{
	hwloc_bitmap_t b = hwloc_bitmap_alloc();
	if (!b)
		return NULL;
	for (int i = 0; i < n; i++)
		hwloc_bitmap_set(b, (unsigned)v[i]);
	char *s = set_list(b);
	hwloc_bitmap_free(b);
	return s;
}

int topo_mkdir_p(const char *dir)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0755) && errno != EEXIST)
		return -errno;
	struct stat st;
	if (stat(p, &st))
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int out_path(const struct capture *c, const char *name, char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/%s", c->out_dir, name) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

static void note_file(struct capture *c, const char *path, const char *how)
{
	if (c->n_files < 5)
		snprintf(c->files[c->n_files++], sizeof(c->files[0]), "wrote %s (%s)", path, how);
}

/* Closes f, reporting a write error that fclose or an earlier write hit. */
int topo_close_file(FILE *f)
{
	int bad = ferror(f);
	if (fclose(f) || bad)
		return -EIO;
	return 0;
}

/*
 * Runs argv (searched in PATH) with stdout and stderr into `path`, stdin
 * from /dev/null. Returns its exit status (0..255), 256 + signal when it was
 * killed, -ENOENT when the program is not found, -ETIMEDOUT after
 * timeout_ms (it is killed), another -errno when it could not start.
 */
static int run_to_file(char *const argv[], const char *path, int timeout_ms)
{
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa))
		return -ENOMEM;
	int rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (!rc)
		rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
	pid_t pid = -1;
	if (!rc)
		rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		return -rc;
	int status = 0;
	for (int waited_ms = 0;; waited_ms += 10) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (waited_ms >= timeout_ms) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 256 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static bool file_nonempty(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && st.st_size > 0;
}

/* Why a command's output is not used: "lscpu not found", "... exit 1". */
static void cmd_failure(char *buf, size_t len, const char *prog, const char *cmd, int rc)
{
	if (rc == -ENOENT)
		snprintf(buf, len, "%s not found", prog);
	else if (rc == -ETIMEDOUT)
		snprintf(buf, len, "`%s` timed out", cmd);
	else if (rc < 0)
		snprintf(buf, len, "`%s` could not run: %s", cmd, strerror(-rc));
	else if (rc > 255)
		snprintf(buf, len, "`%s` was killed by signal %d", cmd, rc - 256);
	else if (rc > 0)
		snprintf(buf, len, "`%s` failed (exit %d)", cmd, rc);
	else
		snprintf(buf, len, "`%s` printed nothing", cmd);
}

/* What the hwloc facts are about, for file headers. */
static void source_name(const struct capture *c, char *buf, size_t len)
{
	if (c->xml)
		snprintf(buf, len, "topology file %s", c->xml);
	else if (c->synthetic)
		snprintf(buf, len, "synthetic topology \"%s\"", c->synthetic);
	else if (c->this_machine)
		snprintf(buf, len, "this machine");
	else
		snprintf(buf, len, "the topology hwloc was pointed at (HWLOC_XMLFILE / HWLOC_SYNTHETIC)");
}

/* ---- hwloc facts ---- */

static int obj_os_cmp(const void *a, const void *b)
{
	unsigned x = (*(const hwloc_obj_t *)a)->os_index, y = (*(const hwloc_obj_t *)b)->os_index;
	return x < y ? -1 : x > y;
}

/* NUMA nodes by OS number; *out freed by the caller. Count or -ENOMEM. */
static int numa_nodes_sorted(hwloc_topology_t t, hwloc_obj_t **out)
{
	int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
	*out = alloc_zmem((size_t)(n > 0 ? n : 1) * sizeof(hwloc_obj_t));
	if (!*out)
		return -ENOMEM;
	for (int i = 0; i < n; i++)
		(*out)[i] = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i);
	qsort(*out, (size_t)n, sizeof(hwloc_obj_t), obj_os_cmp);
	return n;
}

/* A PU's node, as the engine counts it: the lowest-numbered node holding it. */
static hwloc_obj_t pu_node(hwloc_obj_t *nodes, int n, unsigned pu)
{
	for (int i = 0; i < n; i++)
		if (nodes[i]->cpuset && hwloc_bitmap_isset(nodes[i]->cpuset, pu))
			return nodes[i];
	return NULL;
}

static void fprint_mib(FILE *f, const char *label, int node, uint64_t bytes)
{
	fprintf(f, "node %d %s: %llu MB\n", node, label, (unsigned long long)(bytes >> 20));
}

static int write_lscpu_hwloc(const struct capture *c, FILE *f, const char *why)
{
	char src[PATH_MAX + 64];
	source_name(c, src, sizeof(src));
	fprintf(f, "# %s: the same facts from hwloc (%s)\n", why, src);
	fprintf(f, "# CORE and L3 are logical numbers, as lscpu's; SOCKET is the package's number\n");
	hwloc_obj_t *nodes;
	int n = numa_nodes_sorted(c->t, &nodes);
	if (n < 0)
		return n;
	fprintf(f, "CPU NODE SOCKET CORE L3 ONLINE\n");
	hwloc_const_bitmap_t all = hwloc_topology_get_complete_cpuset(c->t);
	hwloc_const_bitmap_t allowed = hwloc_topology_get_allowed_cpuset(c->t);
	int pu;
	hwloc_bitmap_foreach_begin(pu, all)
	{
		hwloc_obj_t o = hwloc_get_pu_obj_by_os_index(c->t, (unsigned)pu);
		if (!o) {
			fprintf(f, "%3d    -      -    -  -     no\n", pu);
			continue;
		}
		hwloc_obj_t node = pu_node(nodes, n, (unsigned)pu);
		hwloc_obj_t pkg = hwloc_get_ancestor_obj_by_type(c->t, HWLOC_OBJ_PACKAGE, o);
		hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(c->t, HWLOC_OBJ_CORE, o);
		hwloc_obj_t l3 = hwloc_get_ancestor_obj_by_type(c->t, HWLOC_OBJ_L3CACHE, o);
		char sn[16] = "-", sp[16] = "-", sc[16] = "-", sl[16] = "-";
		if (node)
			snprintf(sn, sizeof(sn), "%u", node->os_index);
		if (pkg)
			snprintf(sp, sizeof(sp), "%u",
			         pkg->os_index == HWLOC_UNKNOWN_INDEX ? pkg->logical_index : pkg->os_index);
		if (core)
			snprintf(sc, sizeof(sc), "%u", core->logical_index);
		if (l3)
			snprintf(sl, sizeof(sl), "%u", l3->logical_index);
		fprintf(f, "%3d %4s %6s %4s %2s %6s\n", pu, sn, sp, sc, sl,
		        hwloc_bitmap_isset(allowed, (unsigned)pu) ? "yes" : "no");
	}
	hwloc_bitmap_foreach_end();
	alloc_free(nodes);
	return 0;
}

/* numactl --hardware's facts from hwloc (a topology file, or no libnuma). */
static int write_numa_hwloc(const struct capture *c, FILE *f, const char *why)
{
	char src[PATH_MAX + 64];
	source_name(c, src, sizeof(src));
	fprintf(f, "# %s: the same facts from hwloc (%s)\n", why, src);
	hwloc_obj_t *nodes;
	int n = numa_nodes_sorted(c->t, &nodes);
	if (n < 0)
		return n;
	hwloc_bitmap_t ns = hwloc_bitmap_alloc();
	for (int i = 0; ns && i < n; i++)
		hwloc_bitmap_set(ns, nodes[i]->os_index);
	char *nl = ns ? set_list(ns) : NULL;
	fprintf(f, "available: %d nodes (%s)\n", n, nl ? nl : "?");
	free(nl);
	hwloc_bitmap_free(ns);
	for (int i = 0; i < n; i++) {
		int os = (int)nodes[i]->os_index;
		fprintf(f, "node %d cpus:", os);
		int pu;
		hwloc_bitmap_foreach_begin(pu, nodes[i]->cpuset)
		{
			/* numactl lists a CPU under every node holding it; keep that. */
			fprintf(f, " %d", pu);
		}
		hwloc_bitmap_foreach_end();
		fprintf(f, "\n");
		fprint_mib(f, "size", os, nodes[i]->attr->numanode.local_memory);
		fprintf(f, "node %d free: unknown (%s)\n", os,
		        c->this_machine ? "hwloc does not report free memory" : "not in a topology");
	}
	unsigned nr = 1;
	struct hwloc_distances_s *d = NULL;
	int got = hwloc_distances_get_by_type(c->t, HWLOC_OBJ_NUMANODE, &nr, &d, HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0);
	if (got == 0 && nr == 1) {
		fprintf(f, "node distances:\nnode ");
		for (unsigned j = 0; j < d->nbobjs; j++)
			fprintf(f, "%4u", d->objs[j]->os_index);
		fprintf(f, "\n");
		for (unsigned i = 0; i < d->nbobjs; i++) {
			fprintf(f, "%4u:", d->objs[i]->os_index);
			for (unsigned j = 0; j < d->nbobjs; j++)
				fprintf(f, "%4llu", (unsigned long long)d->values[i * d->nbobjs + j]);
			fprintf(f, "\n");
		}
		hwloc_distances_release(c->t, d);
	} else {
		fprintf(f, "node distances: not recorded%s\n", c->this_machine ? "" : " in the topology");
	}
	alloc_free(nodes);
	return 0;
}

/* numactl --hardware's facts from libnuma (this machine, numactl missing). */
static int write_numa_libnuma(FILE *f, const char *why)
{
	fprintf(f, "# %s: the same facts from libnuma (this machine)\n", why);
	int max = numa_max_node();
	struct bitmask *cpus = numa_allocate_cpumask();
	if (!cpus)
		return -ENOMEM;
	int n = 0;
	for (int i = 0; i <= max; i++)
		n += numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)i) != 0;
	fprintf(f, "available: %d nodes (", n);
	for (int i = 0, k = 0; i <= max; i++)
		if (numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)i))
			fprintf(f, "%s%d", k++ ? "," : "", i);
	fprintf(f, ")\n");
	for (int i = 0; i <= max; i++) {
		if (!numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)i))
			continue;
		fprintf(f, "node %d cpus:", i);
		if (numa_node_to_cpus(i, cpus) == 0)
			for (unsigned k = 0; k < cpus->size; k++)
				if (numa_bitmask_isbitset(cpus, k))
					fprintf(f, " %u", k);
		fprintf(f, "\n");
		long long free_b = 0;
		long long size = numa_node_size64(i, &free_b);
		fprint_mib(f, "size", i, size > 0 ? (uint64_t)size : 0);
		fprint_mib(f, "free", i, free_b > 0 ? (uint64_t)free_b : 0);
	}
	fprintf(f, "node distances:\nnode ");
	for (int j = 0; j <= max; j++)
		if (numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)j))
			fprintf(f, "%4d", j);
	fprintf(f, "\n");
	for (int i = 0; i <= max; i++) {
		if (!numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)i))
			continue;
		fprintf(f, "%4d:", i);
		for (int j = 0; j <= max; j++)
			if (numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)j))
				fprintf(f, "%4d", numa_distance(i, j));
		fprintf(f, "\n");
	}
	numa_free_cpumask(cpus);
	return 0;
}

/* lstopo's console view, written here: the tree with sets and I/O locality. */
static void dump_obj(FILE *f, hwloc_topology_t t, hwloc_obj_t o, int depth)
{
	char type[64], attr[512];
	hwloc_obj_type_snprintf(type, sizeof(type), o, 1);
	hwloc_obj_attr_snprintf(attr, sizeof(attr), o, ", ", 0);
	fprintf(f, "%*s%s", depth * 2, "", type);
	bool pci = o->type == HWLOC_OBJ_PCI_DEVICE ||
	           (o->type == HWLOC_OBJ_BRIDGE && o->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_PCI);
	if (pci) {
		const struct hwloc_pcidev_attr_s *a =
		    o->type == HWLOC_OBJ_BRIDGE ? &o->attr->bridge.upstream.pci : &o->attr->pcidev;
		fprintf(f, " %04x:%02x:%02x.%x [%04x:%04x] class %04x", a->domain, a->bus, a->dev, a->func,
		        a->vendor_id, a->device_id, a->class_id);
	}
	if (o->type == HWLOC_OBJ_BRIDGE && o->attr->bridge.downstream_type == HWLOC_OBJ_BRIDGE_PCI)
		fprintf(f, " buses %04x:[%02x-%02x]", o->attr->bridge.downstream.pci.domain,
		        o->attr->bridge.downstream.pci.secondary_bus, o->attr->bridge.downstream.pci.subordinate_bus);
	else if (!hwloc_obj_type_is_io(o->type) && o->os_index != HWLOC_UNKNOWN_INDEX)
		fprintf(f, " P#%u", o->os_index);
	if (o->name)
		fprintf(f, " \"%s\"", o->name);
	if (attr[0])
		fprintf(f, " (%s)", attr);
	/* The few infos worth a reader's eye; lstopo -v shows them all. */
	const char *infos[] = {"CPUModel", "PCIVendor", "PCIDevice", "GPUModel"};
	for (size_t i = 0; i < sizeof(infos) / sizeof(infos[0]); i++) {
		const char *v = hwloc_obj_get_info_by_name(o, infos[i]);
		if (v)
			fprintf(f, " %s=\"%s\"", infos[i], v);
	}
	if (hwloc_obj_type_is_io(o->type)) {
		hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, o);
		/* Locality on devices and host bridges; an OS device under a PCI
		 * device has that device's. */
		bool show = o->type == HWLOC_OBJ_PCI_DEVICE ||
		            (o->type == HWLOC_OBJ_OS_DEVICE && !hwloc_obj_type_is_io(o->parent->type)) ||
		            (o->type == HWLOC_OBJ_BRIDGE && o->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_HOST);
		if (anc && show) {
			char *nl = set_list(anc->nodeset), *cl = set_list(anc->cpuset);
			fprintf(f, " [near NUMA node %s, cpus %s]", nl ? nl : "?", cl ? cl : "?");
			free(nl);
			free(cl);
		}
	} else if (o->cpuset && o->type != HWLOC_OBJ_PU) {
		char *cl = set_list(o->cpuset);
		fprintf(f, " cpus %s", cl ? cl : "?");
		free(cl);
	}
	fprintf(f, "\n");
	for (hwloc_obj_t k = o->memory_first_child; k; k = k->next_sibling)
		dump_obj(f, t, k, depth + 1);
	for (hwloc_obj_t k = o->first_child; k; k = k->next_sibling)
		dump_obj(f, t, k, depth + 1);
	for (hwloc_obj_t k = o->io_first_child; k; k = k->next_sibling)
		dump_obj(f, t, k, depth + 1);
	for (hwloc_obj_t k = o->misc_first_child; k; k = k->next_sibling)
		dump_obj(f, t, k, depth + 1);
}

static int write_lstopo_hwloc(const struct capture *c, FILE *f, const char *why)
{
	char src[PATH_MAX + 64];
	source_name(c, src, sizeof(src));
	fprintf(f, "# %s: the hwloc tree of %s, written by topo-capture\n", why, src);
	fprintf(f, "# (sets are OS numbers; I/O devices show the NUMA nodes and cpus they are local to)\n");
	dump_obj(f, c->t, hwloc_get_root_obj(c->t), 0);
	return 0;
}

/* ---- the four command files ---- */

typedef int (*fallback_fn)(const struct capture *c, FILE *f, const char *why);

/*
 * Runs argv into DIR/name when `run` (this machine); on any failure writes
 * the fallback instead. `how` receives what the file holds.
 */
static int capture_cmd(struct capture *c, const char *name, char *const argv[], const char *cmd, bool run,
                       fallback_fn fb, int (*fb_libnuma)(FILE *, const char *), char *how, size_t howlen)
{
	char path[PATH_MAX];
	int rc = out_path(c, name, path, sizeof(path));
	if (rc)
		return rc;
	char why[256];
	if (run) {
		rc = run_to_file(argv, path, CMD_TIMEOUT_MS);
		if (rc == 0 && file_nonempty(path)) {
			snprintf(how, howlen, "`%s`", cmd);
			note_file(c, path, how);
			return 0;
		}
		cmd_failure(why, sizeof(why), argv[0], cmd, rc);
	} else {
		snprintf(why, sizeof(why), "`%s` not run", cmd);
	}
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	if (fb_libnuma && c->this_machine && numa_available() >= 0) {
		rc = fb_libnuma(f, why);
		snprintf(how, howlen, "from libnuma (%s)", why);
	} else {
		rc = fb(c, f, why);
		snprintf(how, howlen, "from hwloc (%s)", why);
	}
	int rc2 = topo_close_file(f);
	if (!rc)
		rc = rc2;
	if (!rc)
		note_file(c, path, how);
	return rc;
}

static int capture_smi(struct capture *c)
{
	char path[PATH_MAX];
	int rc = out_path(c, "nvidia_smi_topo_day05.txt", path, sizeof(path));
	if (rc)
		return rc;
	if (!c->this_machine) {
		unlink(path); /* no stale file from an earlier capture */
		snprintf(c->how_smi, sizeof(c->how_smi), "not run (the facts come from a topology, not this machine)");
		return 0;
	}
	char *argv[] = {"nvidia-smi", "topo", "-m", NULL};
	rc = run_to_file(argv, path, CMD_TIMEOUT_MS);
	if (rc == 0 && file_nonempty(path)) {
		c->smi_written = true;
		snprintf(c->how_smi, sizeof(c->how_smi), "`nvidia-smi topo -m` in nvidia_smi_topo_day05.txt");
		note_file(c, path, "`nvidia-smi topo -m`");
		return 0;
	}
	unlink(path);
	if (rc == -ENOENT)
		snprintf(c->how_smi, sizeof(c->how_smi),
		         "no nvidia-smi on this machine (no nvidia_smi_topo_day05.txt)");
	else {
		char why[160];
		cmd_failure(why, sizeof(why), "nvidia-smi", "nvidia-smi topo -m", rc);
		snprintf(c->how_smi, sizeof(c->how_smi), "%s (no nvidia_smi_topo_day05.txt)", why);
	}
	return 0;
}

/* ---- summary ---- */

/* A short name for a GPU: its model from an OS device, else the PCI name. */
static const char *gpu_model(hwloc_obj_t pci)
{
	for (hwloc_obj_t o = pci->io_first_child; o; o = o->next_sibling) {
		const char *m = hwloc_obj_get_info_by_name(o, "GPUModel");
		if (m)
			return m;
	}
	const char *d = hwloc_obj_get_info_by_name(pci, "PCIDevice");
	return d ? d : "unknown model";
}

static void os_devices(hwloc_obj_t pci, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (hwloc_obj_t k = pci->io_first_child; k && o < len; k = k->next_sibling)
		if (k->type == HWLOC_OBJ_OS_DEVICE && k->name)
			o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? " " : "", k->name);
}

/* "GPU N is on NUMA node X, nearest cores are Y-Z": into line; details too. */
static int gpu_sentence(const struct capture *c, const struct plan_gpu *g, char *line, size_t len, char *detail,
                        size_t dlen)
{
	hwloc_obj_t pci = hwloc_get_pcidev_by_busidstring(c->t, g->busid);
	hwloc_obj_t anc = pci ? hwloc_get_non_io_ancestor_obj(c->t, pci) : NULL;
	if (!anc)
		return -ENOENT;
	char *nl = set_list(anc->nodeset), *cl = set_list(anc->cpuset);
	if (!nl || !cl) {
		free(nl);
		free(cl);
		return -ENOMEM;
	}
	snprintf(line, len, "GPU %d is on NUMA node %s, nearest cores are %s", g->index, nl, cl);
	char devs[128], placed[64] = "";
	os_devices(pci, devs, sizeof(devs));
	if (hwloc_bitmap_weight(anc->nodeset) != 1)
		snprintf(placed, sizeof(placed), "; the engine places it on node %d", g->node);
	snprintf(detail, dlen, "PCI %s, %s%s%s, local to %s%s", g->busid, gpu_model(pci), devs[0] ? ", " : "", devs,
	         hwloc_obj_type_string(anc->type), placed);
	free(nl);
	free(cl);
	return 0;
}

static bool is_engine_gpu(hwloc_obj_t pci)
{
	const struct hwloc_pcidev_attr_s *a = &pci->attr->pcidev;
	return a->vendor_id == NVIDIA_VENDOR_ID && (a->class_id >> 8) == 0x03;
}

/*
 * Other accelerators (no engine backend): 3D controllers of any vendor, or
 * devices with a compute OS device (OpenCL, Level Zero, ROCm SMI). A display
 * controller whose only OS device is a DRM card (a BMC's VGA) is not one.
 */
static bool is_other_gpu(hwloc_obj_t pci)
{
	if (is_engine_gpu(pci))
		return false;
	if (pci->attr->pcidev.class_id == 0x0302)
		return true;
	for (hwloc_obj_t k = pci->io_first_child; k; k = k->next_sibling) {
		if (k->type != HWLOC_OBJ_OS_DEVICE)
			continue;
		if (k->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC)
			return true;
		if (k->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU && k->name && strncmp(k->name, "card", 4) &&
		    strncmp(k->name, "renderD", 7) && strncmp(k->name, "controlD", 8))
			return true;
	}
	return false;
}

/* The CPU model: hwloc's CPUModel of the packages, else /proc/cpuinfo. */
static void cpu_model(const struct capture *c, char *buf, size_t len)
{
	hwloc_obj_t pkg = hwloc_get_next_obj_by_type(c->t, HWLOC_OBJ_PACKAGE, NULL);
	const char *m = pkg ? hwloc_obj_get_info_by_name(pkg, "CPUModel") : NULL;
	if (!m)
		m = hwloc_obj_get_info_by_name(hwloc_get_root_obj(c->t), "CPUModel");
	if (m) {
		snprintf(buf, len, "%s", m);
		return;
	}
	snprintf(buf, len, "unknown (%s)", c->this_machine ? "hwloc does not say" : "not recorded in the topology");
	FILE *f = c->this_machine ? fopen("/proc/cpuinfo", "r") : NULL;
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) || !colon)
			continue;
		colon += 1 + (colon[1] == ' ');
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(buf, len, "%s", colon);
		break;
	}
	fclose(f);
}

static void print_both(FILE *f, const char *prefix, const char *line)
{
	fprintf(f, "%s%s\n", prefix, line);
	printf("%s\n", line);
}

static int write_summary_machine(const struct capture *c, FILE *f)
{
	struct utsname u;
	bool have_uname = uname(&u) == 0;
	char src[PATH_MAX + 64], model[256];
	source_name(c, src, sizeof(src));
	cpu_model(c, model, sizeof(model));
	hwloc_obj_t root = hwloc_get_root_obj(c->t);
	fprintf(f, "# Topology capture (day 05)\n\n");
	if (c->this_machine) {
		time_t now = time(NULL);
		struct tm tm;
		char when[64] = "?";
		if (gmtime_r(&now, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
		fprintf(f, "Captured on this machine%s%s, %s, by `topo-capture`.\n\n", have_uname ? ", host " : "",
		        have_uname ? u.nodename : "", when);
	} else {
		const char *host = hwloc_obj_get_info_by_name(root, "HostName");
		fprintf(f,
		        "Facts from %s%s%s, not from this machine: `lscpu`, `numactl` and `nvidia-smi` were not "
		        "run.\n\n",
		        src, host ? ", host " : "", host ? host : "");
	}
	fprintf(f, "## Machine\n\n- CPU: %s\n", model);
	if (c->this_machine) {
		fprintf(f, "- Kernel: %s (`uname -r`)\n", have_uname ? u.release : "unknown");
	} else {
		const char *rel = hwloc_obj_get_info_by_name(root, "OSRelease");
		fprintf(f, "- Kernel: %s\n", rel ? rel : "not recorded in the topology");
		if (rel)
			fprintf(f, "  (as recorded in the topology, not this machine's)\n");
	}
	int packages = hwloc_get_nbobjs_by_type(c->t, HWLOC_OBJ_PACKAGE);
	int cores = hwloc_get_nbobjs_by_type(c->t, HWLOC_OBJ_CORE);
	int pus = hwloc_get_nbobjs_by_type(c->t, HWLOC_OBJ_PU);
	fprintf(f, "- Sockets: %d, cores: %d, PUs (hardware threads): %d", packages, cores, pus);
	if (cores > 0 && pus % cores == 0)
		fprintf(f, " (%d per core)", pus / cores);
	fprintf(f, "\n");
	hwloc_obj_t *nodes;
	int n = numa_nodes_sorted(c->t, &nodes);
	if (n < 0)
		return n;
	bool libnuma = c->this_machine && numa_available() >= 0;
	fprintf(f, "- NUMA nodes: %d\n", n);
	for (int i = 0; i < n; i++) {
		char *cl = set_list(nodes[i]->cpuset);
		uint64_t mem = nodes[i]->attr->numanode.local_memory;
		fprintf(f, "  - node %u: cpus %s, memory %.1f GiB", nodes[i]->os_index, cl ? cl : "?",
		        (double)mem / (1024.0 * 1024.0 * 1024.0));
		long long free_b = -1;
		if (libnuma && numa_node_size64((int)nodes[i]->os_index, &free_b) > 0 && free_b >= 0)
			fprintf(f, " (%.1f GiB free)", (double)free_b / (1024.0 * 1024.0 * 1024.0));
		fprintf(f, "\n");
		free(cl);
	}
	alloc_free(nodes);
	return 0;
}

static int write_summary_gpus(const struct capture *c, FILE *f)
{
	const struct plan *p = &c->plan;
	char line[1024], detail[512];
	fprintf(f, "\n## GPUs\n\n");
	if (c->plan_rc) {
		fprintf(f, "The engine's plan failed: %s\n", c->plan_err);
		return 0;
	}
	for (int i = 0; i < p->n_gpus; i++) {
		int rc = gpu_sentence(c, &p->gpus[i], line, sizeof(line), detail, sizeof(detail));
		if (rc == -ENOMEM)
			return rc;
		if (rc) {
			snprintf(line, sizeof(line), "GPU %d is on NUMA node %d, nearest cores are unknown",
			         p->gpus[i].index, p->gpus[i].node);
			snprintf(detail, sizeof(detail), "PCI %s not found again in the topology", p->gpus[i].busid);
		}
		print_both(f, "- ", line);
		fprintf(f, "  (%s)\n", detail);
	}
	int n_other = 0, n_display = 0;
	for (hwloc_obj_t pci = hwloc_get_next_pcidev(c->t, NULL); pci; pci = hwloc_get_next_pcidev(c->t, pci)) {
		bool other = is_other_gpu(pci);
		bool display = !other && !is_engine_gpu(pci) && (pci->attr->pcidev.class_id >> 8) == 0x03;
		if (!other && !display)
			continue;
		hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(c->t, pci);
		char *nl = set_list(anc ? anc->nodeset : NULL), *cl = set_list(anc ? anc->cpuset : NULL);
		const struct hwloc_pcidev_attr_s *a = &pci->attr->pcidev;
		char devs[128];
		os_devices(pci, devs, sizeof(devs));
		const char *v = hwloc_obj_get_info_by_name(pci, "PCIVendor");
		snprintf(line, sizeof(line),
		         "%s PCI %04x:%02x:%02x.%x (%s %s, class %04x%s%s), near NUMA node %s, cores %s",
		         other ? "Other accelerator, no engine backend:" : "Display controller, not counted as a GPU:",
		         a->domain, a->bus, a->dev, a->func, v ? v : "vendor", gpu_model(pci), a->class_id,
		         devs[0] ? ", " : "", devs, nl ? nl : "?", cl ? cl : "?");
		free(nl);
		free(cl);
		fprintf(f, "- %s\n", line);
		n_other += other;
		n_display += display;
	}
	if (p->n_gpus == 0) {
		const char *none =
		    n_other ? "No NVIDIA GPU found (the engine's GPU backend is CUDA)." : "No GPU found.";
		fprintf(f, "%s%s\n", n_display || n_other ? "\n" : "", none);
		printf("%s\n", none);
	}
	return 0;
}

static int write_summary_engine(const struct capture *c, FILE *f)
{
	const struct plan *p = &c->plan;
	if (c->plan_rc)
		return 0;
	fprintf(f, "\n## Engine placement\n\n");
	fprintf(f,
	        "The plan `engine --check-config` makes for the default configuration (`[backend] type = auto`, "
	        "`[numa] node = auto`, `cpus = auto`, `pin = on`, `[server] net_threads = 1`) on this "
	        "topology: %s.\n\n",
	        p->topology);
	if (p->backend == CFG_BACKEND_CPU && p->n_gpus) {
		print_both(f, "", "This build has no CUDA backend: the engine would run on the CPU.");
		fprintf(f, "\n");
	}
	for (int j = 0; j < p->n_nodes; j++) {
		const struct plan_node *pn = &p->nodes[j];
		char *cl = ints_list(pn->cpus, pn->n_cpus);
		char line[1200];
		if (!cl)
			return -ENOMEM;
		if (pn->gpu >= 0)
			snprintf(line, sizeof(line), "The engine would use GPU %d on NUMA node %d, cores %s", pn->gpu,
			         pn->node, cl);
		else
			snprintf(line, sizeof(line), "The engine would use NUMA node %d, cores %s", pn->node, cl);
		free(cl);
		print_both(f, "- ", line);
	}
	char *nl = ints_list(p->net_cpus, p->n_net_cpus);
	if (!nl)
		return -ENOMEM;
	fprintf(f, "- Net thread%s: CPU %s%s\n", p->n_net_cpus == 1 ? "" : "s", nl,
	        p->net_shared ? " (shared with compute)" : "");
	free(nl);
	for (int i = 0; i < p->n_warnings; i++)
		fprintf(f, "- Plan warning: %s\n", p->warnings[i]);
	return 0;
}

static int write_summary(struct capture *c)
{
	char path[PATH_MAX];
	int rc = out_path(c, "summary.md", path, sizeof(path));
	if (rc)
		return rc;
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	/* The file list goes to stdout first, the sentences after it. */
	note_file(c, path, "summary");
	for (int i = 0; i < c->n_files; i++)
		printf("%s\n", c->files[i]);
	rc = write_summary_machine(c, f);
	if (!rc)
		rc = write_summary_gpus(c, f);
	if (!rc)
		rc = write_summary_engine(c, f);
	if (!rc) {
		fprintf(f, "\n## Files\n\n");
		fprintf(f, "- lscpu_day05.txt: %s\n", c->how_lscpu);
		fprintf(f, "- numa_day05.txt: %s\n", c->how_numa);
		fprintf(f, "- lstopo_day05.txt: %s\n", c->how_lstopo);
		fprintf(f, "- nvidia-smi: %s\n", c->how_smi);
	}
	int rc2 = topo_close_file(f);
	return rc ? rc : rc2;
}

int topo_parse_opts(int argc, char **argv, const char *const *opts, const char **const *dst, int n_opts,
                    const char *ctx, const char *hint)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help"))
			return 1;
		int k = 0;
		for (; k < n_opts; k++) {
			size_t n = strlen(opts[k]);
			if (!strcmp(a, opts[k])) {
				if (i + 1 >= argc) {
					fprintf(stderr, "topo-capture: %s needs a value (see %s)\n", a, hint);
					return -1;
				}
				v = argv[++i];
				break;
			}
			if (!strncmp(a, opts[k], n) && a[n] == '=') {
				v = a + n + 1;
				break;
			}
		}
		if (k == n_opts) {
			fprintf(stderr, "topo-capture: %sunknown %s '%s' (see %s)\n", ctx,
			        a[0] == '-' ? "option" : "argument", a, hint);
			return -1;
		}
		if (!v[0]) {
			fprintf(stderr, "topo-capture: %s: empty value\n", opts[k]);
			return -1;
		}
		*dst[k] = v;
	}
	return 0;
}

int topo_check_source(const char *xml, const char *synthetic)
{
	if (xml && synthetic) {
		fprintf(stderr, "topo-capture: --topology and --synthetic exclude each other\n");
		return 2;
	}
	if (xml) {
		size_t n = strlen(xml);
		if (n <= 4 || strcmp(xml + n - 4, ".xml")) {
			fprintf(stderr, "topo-capture: --topology %s: expected an hwloc XML file named *.xml\n", xml);
			return 2;
		}
		if (access(xml, R_OK)) {
			fprintf(stderr, "topo-capture: --topology %s: %s\n", xml, strerror(errno));
			return 1;
		}
	}
	if (synthetic) {
		size_t n = strlen(synthetic);
		if (n > 4 && !strcmp(synthetic + n - 4, ".xml")) {
			fprintf(stderr, "topo-capture: --synthetic %s: looks like a file; use --topology\n", synthetic);
			return 2;
		}
	}
	return 0;
}

/* ---- main ---- */

static int capture_run(struct capture *c)
{
	int rc = topo_mkdir_p(c->out_dir);
	if (rc) {
		fprintf(stderr, "topo-capture: --out %s: %s\n", c->out_dir, strerror(-rc));
		return rc;
	}
	char *lscpu[] = {"lscpu", "-e", NULL};
	char *numactl[] = {"numactl", "--hardware", NULL};
	char *lstopo_here[] = {"lstopo-no-graphics", "--of", "console", NULL};
	char *lstopo_in[] = {"lstopo-no-graphics", "-i", (char *)c->desc, "--of", "console", NULL};
	const char *step = "lscpu_day05.txt";
	rc = capture_cmd(c, step, lscpu, "lscpu -e", c->this_machine, write_lscpu_hwloc, NULL, c->how_lscpu,
	                 sizeof(c->how_lscpu));
	if (!rc) {
		step = "numa_day05.txt";
		rc = capture_cmd(c, step, numactl, "numactl --hardware", c->this_machine, write_numa_hwloc,
		                 write_numa_libnuma, c->how_numa, sizeof(c->how_numa));
	}
	if (!rc) {
		/* lstopo reads a topology file or description as well as we do. */
		step = "lstopo_day05.txt";
		bool run = c->this_machine || c->desc;
		char cmd[PATH_MAX + 64];
		if (c->desc)
			snprintf(cmd, sizeof(cmd), "lstopo-no-graphics -i %s%s%s --of console", c->xml ? "" : "\"",
			         c->desc, c->xml ? "" : "\"");
		else
			snprintf(cmd, sizeof(cmd), "lstopo-no-graphics --of console");
		rc = capture_cmd(c, step, c->desc ? lstopo_in : lstopo_here, cmd, run, write_lstopo_hwloc, NULL,
		                 c->how_lstopo, sizeof(c->how_lstopo));
	}
	if (!rc) {
		step = "nvidia_smi_topo_day05.txt";
		rc = capture_smi(c);
	}
	if (!rc) {
		step = "summary.md";
		rc = write_summary(c);
	}
	if (rc)
		fprintf(stderr, "topo-capture: %s/%s: %s\n", c->out_dir, step, strerror(-rc));
	return rc;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--emit-configs") || !strncmp(argv[i], "--emit-configs=", 15))
			return topo_emit_main(argc, argv);
	struct capture *c = alloc_zmem(sizeof(*c));
	if (!c) {
		fprintf(stderr, "topo-capture: out of memory\n");
		return 1;
	}
	c->out_dir = "benchmarks";
	int ret = 2;
	const char *opts[] = {"--out", "--topology", "--synthetic"};
	const char **dst[] = {&c->out_dir, &c->xml, &c->synthetic};
	int rc = topo_parse_opts(argc, argv, opts, dst, 3, "", "--help");
	if (rc == 1) {
		usage(stdout);
		ret = 0;
		goto out;
	}
	if (rc || (ret = topo_check_source(c->xml, c->synthetic)) != 0)
		goto out;
	ret = 1;
	c->desc = c->xml ? c->xml : c->synthetic;
	char err[512];
	hwloc_topology_t t;
	if (plan_topology_load(&t, c->desc, err, sizeof(err))) {
		fprintf(stderr, "topo-capture: %s\n", err);
		goto out;
	}
	c->t = t;
	c->this_machine = !c->desc && hwloc_topology_is_thissystem(t);
	if (!hwloc_get_root_obj(t)->cpuset || hwloc_bitmap_iszero(hwloc_get_root_obj(t)->cpuset)) {
		fprintf(stderr, "topo-capture: the topology has no CPUs\n");
		goto out;
	}
	/* The engine's view: the default configuration, no model needed. */
	struct engine_config cfg;
	config_default(&cfg);
	c->plan_rc = plan_resolve_ex(&cfg, c->desc, PLAN_NO_MODEL, &c->plan, c->plan_err, sizeof(c->plan_err));
	if (capture_run(c) == 0)
		ret = 0;
	if (c->plan_rc) {
		fprintf(stderr, "topo-capture: the engine's plan failed: %s\n", c->plan_err);
		ret = 1;
	}
out:
	if (c->t)
		hwloc_topology_destroy(c->t);
	alloc_free(c);
	return ret;
}
