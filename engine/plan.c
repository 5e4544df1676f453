/*
 * plan.c: the placement plan. Reads the machine with hwloc (or a synthetic /
 * XML topology for tests), then decides which NUMA nodes serve, which CPUs
 * run each node's dispatcher and compute threads and the net threads, and
 * how large each node's KV pool and scratch are. docs/CONFIG.md states the
 * rules; the short version:
 *
 *   - A CPU belongs to the lowest-numbered NUMA node whose locality holds it
 *     (so a CPU-less memory node, CXL or HBM, whose locality is a whole
 *     package or machine, never claims cores).
 *   - cuda: one plan node per GPU ([backend] gpus = LIST: only those, each
 *     of which must exist on a served node), the node's CPUs split evenly.
 *   - cpus = auto: one PU per physical core (SMT siblings skipped) among the
 *     PUs this process may use (hwloc's allowed set, which follows the cgroup
 *     cpuset, intersected with the process's CPU binding on the real machine).
 *   - Net threads: on listed CPUs (cpus = LIST) of the first plan node that
 *     compute does not use, then on its other cores that no compute thread
 *     uses; else, with cpus, threads and backend all automatic, the last cores
 *     of the first node are taken from compute as long as two compute cores
 *     remain; else they share the last compute CPUs (and the plan warns).
 *
 * Invariants of a resolved plan: backend is never AUTO; every plan node has
 * 1..CFG_MAX_CPUS cpus, all allowed and on that node; n_threads == n_cpus
 * when pinned; kv_tokens is a positive multiple of the block size and its
 * block count fits int32.
 *
 * Threading: start-up only. The hwloc topology lives only inside
 * plan_resolve_ex (plan_topology_load hands one to a tool, which frees it).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hwloc.h>

#include "alloc/alloc.h"
#include "engine/config.h"
#include "engine/model.h"

#define NVIDIA_VENDOR_ID 0x10de

struct topo_node {
	int os;                  /* NUMA node number */
	int cores[CFG_MAX_CPUS]; /* first allowed PU of each allowed core, topology order */
	int n_cores;
	int64_t mem_bytes; /* local memory, 0 when unknown */
};

struct topo_gpu {
	int index;    /* CUDA device index (cudaN when hwloc names it, else PCI order) */
	int node_idx; /* index into topo.nodes */
	char busid[24];
};

struct topo {
	int n_packages, n_cores, n_pus;        /* as hwloc sees the machine (cgroup-allowed) */
	int n_cores_usable, n_pus_usable;      /* after the process's CPU binding */
	struct topo_node nodes[CFG_MAX_NODES]; /* by NUMA node number */
	int n_nodes;
	int16_t pu_node[CFG_MAX_CPUS]; /* PU -> index into nodes, -1: not usable */
	struct topo_gpu gpus[PLAN_MAX_GPUS];
	int n_gpus;
};

/* The model shape the plan sizes memory from. */
struct shape {
	int64_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
	int64_t weight_bytes;
};

/* The null backend without a model: a fixed tiny shape (docs/CONFIG.md). */
/* clang-format off */
static const struct shape null_shape = {
	.n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .head_dim = 16, .n_ff = 128,
	.n_vocab = 256, .n_ctx_train = 4096,
};
/* clang-format on */

static void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void warn(struct plan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct plan *p, const char *fmt, ...)
{
	if (p->n_warnings >= PLAN_MAX_WARNINGS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->warnings[p->n_warnings++], PLAN_WARNING_LEN, fmt, ap);
	va_end(ap);
}

void plan_fmt_cpus(char *buf, size_t len, const int *cpus, int n)
{
	size_t o = 0;
	buf[0] = '\0';
	for (int i = 0; i < n && o < len;) {
		int j = i;
		while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
			j++;
		if (j == i)
			o += (size_t)snprintf(buf + o, len - o, "%s%d", i ? "," : "", cpus[i]);
		else
			o += (size_t)snprintf(buf + o, len - o, "%s%d-%d", i ? "," : "", cpus[i], cpus[j]);
		i = j + 1;
	}
	if (n == 0)
		snprintf(buf, len, "none");
}

static const char *backend_name(enum cfg_backend b)
{
	switch (b) {
	case CFG_BACKEND_AUTO:
		return "auto";
	case CFG_BACKEND_CPU:
		return "cpu";
	case CFG_BACKEND_CUDA:
		return "cuda";
	case CFG_BACKEND_NULL:
		return "null";
	}
	return "?";
}

static const char *policy_name(enum alloc_policy p)
{
	switch (p) {
	case ALLOC_POLICY_OFF:
		return "off";
	case ALLOC_POLICY_PREFERRED:
		return "preferred";
	case ALLOC_POLICY_STRICT:
		return "strict";
	}
	return "?";
}

/* ---- topology ---- */

static int node_cmp(const void *a, const void *b)
{
	unsigned x = (*(const hwloc_obj_t *)a)->os_index, y = (*(const hwloc_obj_t *)b)->os_index;
	return x < y ? -1 : x > y;
}

static int topo_node_index(const struct topo *tp, int os)
{
	for (int i = 0; i < tp->n_nodes; i++)
		if (tp->nodes[i].os == os)
			return i;
	return -1;
}

/* Adds the NVIDIA GPUs (PCI class 03xx: VGA or 3D controller) and their node. */
static void topo_gpus(struct topo *tp, hwloc_topology_t t, const hwloc_obj_t *nodes, struct plan *out)
{
	int seq = 0;
	for (hwloc_obj_t pci = hwloc_get_next_pcidev(t, NULL); pci; pci = hwloc_get_next_pcidev(t, pci)) {
		const struct hwloc_pcidev_attr_s *a = &pci->attr->pcidev;
		if (a->vendor_id != NVIDIA_VENDOR_ID || (a->class_id >> 8) != 0x03)
			continue;
		if (tp->n_gpus == PLAN_MAX_GPUS)
			break;
		struct topo_gpu *g = &tp->gpus[tp->n_gpus];
		g->index = seq++;
		for (hwloc_obj_t o = pci->io_first_child; o; o = o->next_sibling) {
			int idx;
			if (o->type == HWLOC_OBJ_OS_DEVICE && o->name && sscanf(o->name, "cuda%d", &idx) == 1 &&
			    idx >= 0)
				g->index = idx;
		}
		snprintf(g->busid, sizeof(g->busid), "%04x:%02x:%02x.%x", a->domain, a->bus, a->dev, a->func);
		/* The GPU's node: the nodes local to its closest CPU-side
		 * ancestor, first one with cores. */
		hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, pci);
		g->node_idx = -1;
		int n_local = 0;
		for (int i = 0; i < tp->n_nodes; i++) {
			if (!anc || !anc->nodeset || !hwloc_bitmap_isset(anc->nodeset, (unsigned)nodes[i]->os_index) ||
			    tp->nodes[i].n_cores == 0)
				continue;
			if (g->node_idx < 0)
				g->node_idx = i;
			n_local++;
		}
		if (g->node_idx < 0 || n_local > 1) {
			for (int i = 0; g->node_idx < 0 && i < tp->n_nodes; i++)
				if (tp->nodes[i].n_cores)
					g->node_idx = i;
			if (g->node_idx >= 0)
				warn(out, "GPU %d (%s) is not local to one NUMA node: placed on node %d", g->index,
				     g->busid, tp->nodes[g->node_idx].os);
		}
		if (g->node_idx >= 0)
			tp->n_gpus++;
	}
	/* Keep CUDA order: by index. */
	for (int i = 1; i < tp->n_gpus; i++)
		for (int j = i; j > 0 && tp->gpus[j - 1].index > tp->gpus[j].index; j--) {
			struct topo_gpu x = tp->gpus[j];
			tp->gpus[j] = tp->gpus[j - 1];
			tp->gpus[j - 1] = x;
		}
}

static int topo_read(struct topo *tp, hwloc_topology_t t, bool this_system, struct plan *out, char *err, size_t errlen)
{
	int rc = -ENOMEM;
	hwloc_obj_t *nodes = NULL;
	hwloc_bitmap_t usable = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t));
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	if (!usable || !set)
		goto out;
	if (this_system && hwloc_get_cpubind(t, set, HWLOC_CPUBIND_PROCESS) == 0 && !hwloc_bitmap_iszero(set))
		hwloc_bitmap_and(usable, usable, set);

	tp->n_packages = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
	tp->n_pus = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
	tp->n_cores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
	int n_numa = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
	if (n_numa > CFG_MAX_NODES) {
		warn(out, "%d NUMA nodes: only the first %d are considered", n_numa, CFG_MAX_NODES);
		n_numa = CFG_MAX_NODES;
	}
	nodes = alloc_zmem((size_t)(n_numa > 0 ? n_numa : 1) * sizeof(*nodes));
	if (!nodes)
		goto out;
	for (int i = 0; i < n_numa; i++)
		nodes[i] = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i);
	qsort(nodes, (size_t)n_numa, sizeof(*nodes), node_cmp);
	tp->n_nodes = n_numa;
	for (int i = 0; i < n_numa; i++) {
		tp->nodes[i].os = (int)nodes[i]->os_index;
		tp->nodes[i].mem_bytes = (int64_t)nodes[i]->attr->numanode.local_memory;
	}
	for (int i = 0; i < CFG_MAX_CPUS; i++)
		tp->pu_node[i] = -1;

	/* Cores in topology order (PUs stand in when hwloc found no cores). */
	hwloc_obj_type_t ct = tp->n_cores > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
	bool big_ids = false;
	for (hwloc_obj_t core = hwloc_get_next_obj_by_type(t, ct, NULL); core;
	     core = hwloc_get_next_obj_by_type(t, ct, core)) {
		hwloc_bitmap_and(set, core->cpuset, usable);
		int rep = hwloc_bitmap_first(set);
		if (rep < 0)
			continue;
		if (rep >= CFG_MAX_CPUS) {
			big_ids = true;
			continue;
		}
		int owner = -1;
		for (int i = 0; i < n_numa && owner < 0; i++)
			if (nodes[i]->cpuset && hwloc_bitmap_isset(nodes[i]->cpuset, (unsigned)rep))
				owner = i;
		if (owner < 0)
			continue;
		tp->n_cores_usable++;
		struct topo_node *tn = &tp->nodes[owner];
		if (tn->n_cores < CFG_MAX_CPUS)
			tn->cores[tn->n_cores++] = rep;
		int pu;
		hwloc_bitmap_foreach_begin(pu, set)
		{
			if (pu < CFG_MAX_CPUS) {
				tp->pu_node[pu] = (int16_t)owner;
				tp->n_pus_usable++;
			} else {
				big_ids = true;
			}
		}
		hwloc_bitmap_foreach_end();
	}
	if (big_ids)
		warn(out, "CPUs numbered %d and above are not used", CFG_MAX_CPUS);
	if (tp->n_cores == 0)
		tp->n_cores = tp->n_pus;
	topo_gpus(tp, t, nodes, out);
	rc = 0;
out:
	if (rc)
		errf(err, errlen, "topology: out of memory");
	alloc_free(nodes);
	hwloc_bitmap_free(set);
	hwloc_bitmap_free(usable);
	return rc;
}

int plan_topology_load(struct hwloc_topology **out, const char *desc, char *err, size_t errlen)
{
	hwloc_topology_t t;
	*out = NULL;
	if (hwloc_topology_init(&t)) {
		errf(err, errlen, "topology: hwloc_topology_init failed");
		return -ENOMEM;
	}
	int rc = 0;
	hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	/* The libpciaccess component leaks at load (seen under ASan with
	 * Debian's hwloc 2.9); hwloc's Linux backend reads the same PCI devices
	 * (vendor, class, locality) from sysfs without it. */
	hwloc_topology_set_components(t, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
	if (desc) {
		size_t n = strlen(desc);
		if (n > 4 && strcmp(desc + n - 4, ".xml") == 0)
			rc = hwloc_topology_set_xml(t, desc);
		else
			rc = hwloc_topology_set_synthetic(t, desc);
		if (rc) {
			errf(err, errlen, "topology '%.200s': not a valid hwloc synthetic description or XML file",
			     desc);
			rc = -EINVAL;
			goto out;
		}
	}
	if (hwloc_topology_load(t)) {
		errf(err, errlen, "topology: hwloc could not read the machine%s%.200s", desc ? " from " : "",
		     desc ? desc : "");
		rc = -EIO;
		goto out;
	}
	*out = t;
	return 0;
out:
	hwloc_topology_destroy(t);
	return rc;
}

static int topo_load(struct topo *tp, const char *desc, struct plan *out, char *err, size_t errlen)
{
	hwloc_topology_t t;
	int rc = plan_topology_load(&t, desc, err, errlen);
	if (rc)
		return rc;
	rc = topo_read(tp, t, !desc && hwloc_topology_is_thissystem(t), out, err, errlen);
	if (rc == 0) {
		char gpus[48];
		if (tp->n_gpus)
			snprintf(gpus, sizeof(gpus), "%d NVIDIA GPU%s", tp->n_gpus, tp->n_gpus > 1 ? "s" : "");
		else
			snprintf(gpus, sizeof(gpus), "no GPU");
		int o =
		    snprintf(out->topology, sizeof(out->topology), "%d package%s, %d NUMA node%s, %d core%s, %d PU%s",
		             tp->n_packages, tp->n_packages == 1 ? "" : "s", tp->n_nodes, tp->n_nodes == 1 ? "" : "s",
		             tp->n_cores, tp->n_cores == 1 ? "" : "s", tp->n_pus, tp->n_pus == 1 ? "" : "s");
		if (tp->n_pus_usable < tp->n_pus)
			o += snprintf(out->topology + o, sizeof(out->topology) - (size_t)o,
			              " (%d cores, %d PUs usable)", tp->n_cores_usable, tp->n_pus_usable);
		snprintf(out->topology + o, sizeof(out->topology) - (size_t)o, ", %s", gpus);
		out->n_gpus = tp->n_gpus;
		for (int g = 0; g < tp->n_gpus; g++) {
			out->gpus[g].index = tp->gpus[g].index;
			out->gpus[g].node = tp->nodes[tp->gpus[g].node_idx].os;
			memcpy(out->gpus[g].busid, tp->gpus[g].busid, sizeof(out->gpus[g].busid));
		}
	}
	hwloc_topology_destroy(t);
	return rc;
}

/* ---- model shape ---- */

static int shape_load(const struct engine_config *c, enum cfg_backend be, bool no_model, struct shape *s,
		      struct plan *out, char *err, size_t errlen)
{
	if (!c->model_path[0]) {
		if (be != CFG_BACKEND_NULL && !no_model) {
			errf(err, errlen, "[model] path: required (the GGUF file to serve)");
			return -EINVAL;
		}
		*s = null_shape;
		out->model_fixed_shape = true;
		snprintf(out->model_name, sizeof(out->model_name), "%s", c->model_name[0] ? c->model_name : "null");
		if (!no_model)
			warn(out,
			     "no model: memory sized for the null backend's fixed shape (%" PRId64 " layers, %" PRId64
			     " KV heads of %" PRId64 ", vocabulary %" PRId64 ")",
			     s->n_layer, s->n_head_kv, s->head_dim, s->n_vocab);
		return 0;
	}
	struct model *m = NULL;
	char why[256];
	int rc = model_load(c->model_path, 0, &m, why, sizeof(why));
	if (rc) {
		errf(err, errlen, "[model] path = '%.200s': %s", c->model_path, why);
		return rc;
	}
	const struct kern_hparams *hp = &m->w.hp;
	s->n_layer = hp->n_layer;
	s->n_embd = hp->n_embd;
	s->n_head = hp->n_head;
	s->n_head_kv = hp->n_head_kv;
	s->head_dim = hp->head_dim;
	s->n_ff = hp->n_ff;
	s->n_vocab = hp->n_vocab;
	s->n_ctx_train = hp->n_ctx_train;
	s->weight_bytes = (int64_t)m->weight_bytes;
	model_free(m);
	if (c->model_name[0]) {
		snprintf(out->model_name, sizeof(out->model_name), "%s", c->model_name);
	} else {
		const char *b = strrchr(c->model_path, '/');
		b = b ? b + 1 : c->model_path;
		size_t n = strlen(b);
		if (n > 5 && strcmp(b + n - 5, ".gguf") == 0)
			n -= 5;
		if (n >= sizeof(out->model_name))
			n = sizeof(out->model_name) - 1;
		memcpy(out->model_name, b, n);
		out->model_name[n] = '\0';
	}
	return 0;
}

/* ---- placement ---- */

/* Plan nodes and their CPUs before threads and net threads are settled. */
static int place_nodes(const struct engine_config *c, const struct topo *tp, struct plan *out, char *err, size_t errlen)
{
	if (c->node >= 0) {
		int i = topo_node_index(tp, c->node);
		if (i < 0) {
			int os[CFG_MAX_NODES];
			for (int k = 0; k < tp->n_nodes; k++)
				os[k] = tp->nodes[k].os;
			char list[128];
			plan_fmt_cpus(list, sizeof(list), os, tp->n_nodes);
			errf(err, errlen, "[numa] node = %d: no such NUMA node (this machine has node%s %s)", c->node,
			     tp->n_nodes == 1 ? "" : "s", list);
			return -EINVAL;
		}
		if (tp->nodes[i].n_cores == 0) {
			errf(err, errlen, "[numa] node = %d: the node has no CPUs this process may use", c->node);
			return -EINVAL;
		}
	}
	for (int k = 0; k < c->n_cpus; k++) {
		int cpu = c->cpus[k];
		if (tp->pu_node[cpu] < 0) {
			char list[256];
			int usable[CFG_MAX_CPUS], n = 0;
			for (int i = 0; i < CFG_MAX_CPUS; i++)
				if (tp->pu_node[i] >= 0)
					usable[n++] = i;
			plan_fmt_cpus(list, sizeof(list), usable, n);
			errf(err, errlen, "[numa] cpus: CPU %d is not one this process may use (usable: %s)", cpu,
			     list);
			return -EINVAL;
		}
		if (c->node >= 0 && tp->nodes[tp->pu_node[cpu]].os != c->node) {
			errf(err, errlen, "[numa] cpus: CPU %d is on NUMA node %d, but node = %d", cpu,
			     tp->nodes[tp->pu_node[cpu]].os, c->node);
			return -EINVAL;
		}
	}
	for (int i = 0; i < tp->n_nodes && out->n_nodes < CFG_MAX_NODES; i++) {
		const struct topo_node *tn = &tp->nodes[i];
		if (c->node >= 0 && tn->os != c->node)
			continue;
		struct plan_node *pn = &out->nodes[out->n_nodes];
		pn->node = tn->os;
		pn->gpu = -1;
		pn->n_cpus = 0;
		if (c->n_cpus == 0) {
			memcpy(pn->cpus, tn->cores, (size_t)tn->n_cores * sizeof(int));
			pn->n_cpus = tn->n_cores;
		} else {
			for (int k = 0; k < c->n_cpus; k++)
				if (tp->pu_node[c->cpus[k]] == i)
					pn->cpus[pn->n_cpus++] = c->cpus[k];
		}
		if (pn->n_cpus > 0)
			out->n_nodes++;
	}
	if (out->n_nodes == 0) {
		errf(err, errlen, "[numa] no NUMA node has CPUs this process may use");
		return -EINVAL;
	}
	return 0;
}

/* [backend] gpus = LIST: every listed GPU must exist and sit on a node the
 * plan serves ([numa] node, or the nodes of [numa] cpus). */
static int check_gpu_list(const struct engine_config *c, const struct topo *tp, const struct plan *out, char *err,
                          size_t errlen)
{
	for (int k = 0; k < c->n_gpus; k++) {
		int g = 0;
		while (g < tp->n_gpus && tp->gpus[g].index != c->gpus[k])
			g++;
		if (g == tp->n_gpus) {
			int idx[PLAN_MAX_GPUS];
			for (int i = 0; i < tp->n_gpus; i++)
				idx[i] = tp->gpus[i].index;
			char list[256];
			plan_fmt_cpus(list, sizeof(list), idx, tp->n_gpus);
			errf(err, errlen, "[backend] gpus: GPU %d does not exist (this machine has GPU%s %s)",
			     c->gpus[k], tp->n_gpus == 1 ? "" : "s", list);
			return -EINVAL;
		}
		int node = tp->nodes[tp->gpus[g].node_idx].os;
		bool served = false;
		for (int j = 0; j < out->n_nodes; j++)
			served |= out->nodes[j].node == node;
		if (served)
			continue;
		if (c->node >= 0)
			errf(err, errlen, "[backend] gpus: GPU %d is on NUMA node %d, but [numa] node = %d", c->gpus[k],
			     node, c->node);
		else
			errf(err, errlen, "[backend] gpus: GPU %d is on NUMA node %d, where [numa] cpus lists no CPU",
			     c->gpus[k], node);
		return -EINVAL;
	}
	return 0;
}

static bool gpu_selected(const struct engine_config *c, int index)
{
	if (c->n_gpus == 0)
		return true;
	for (int k = 0; k < c->n_gpus; k++)
		if (c->gpus[k] == index)
			return true;
	return false;
}

/* cuda: one plan node per GPU on its node ([backend] gpus: only those); the
 * node's CPUs are split between the (selected) GPUs that share it. */
static int place_gpus(const struct engine_config *c, const struct topo *tp, struct plan *out, char *err, size_t errlen)
{
	int rc = check_gpu_list(c, tp, out, err, errlen);
	if (rc)
		return rc;
	int n = out->n_nodes;
	struct plan_node *by_node = alloc_array((size_t)n, sizeof(*by_node));
	if (!by_node) {
		errf(err, errlen, "plan: out of memory");
		return -ENOMEM;
	}
	memcpy(by_node, out->nodes, (size_t)n * sizeof(by_node[0]));
	out->n_nodes = 0;
	for (int j = 0; j < n; j++) {
		const struct plan_node *src = &by_node[j];
		int on_node = 0, seen = 0;
		for (int g = 0; g < tp->n_gpus; g++)
			on_node +=
			    tp->nodes[tp->gpus[g].node_idx].os == src->node && gpu_selected(c, tp->gpus[g].index);
		for (int g = 0; g < tp->n_gpus && out->n_nodes < CFG_MAX_NODES; g++) {
			if (tp->nodes[tp->gpus[g].node_idx].os != src->node || !gpu_selected(c, tp->gpus[g].index))
				continue;
			struct plan_node *pn = &out->nodes[out->n_nodes++];
			pn->node = src->node;
			pn->gpu = tp->gpus[g].index;
			pn->n_cpus = 0;
			if (src->n_cpus >= on_node) {
				int lo = src->n_cpus * seen / on_node, hi = src->n_cpus * (seen + 1) / on_node;
				for (int k = lo; k < hi; k++)
					pn->cpus[pn->n_cpus++] = src->cpus[k];
			} else {
				pn->cpus[pn->n_cpus++] = src->cpus[seen % src->n_cpus];
			}
			seen++;
		}
	}
	alloc_free(by_node);
	if (out->n_nodes == 0) {
		if (c->node >= 0)
			errf(err, errlen, "[numa] node = %d: no NVIDIA GPU is attached to this node (backend cuda)",
			     c->node);
		else
			errf(err, errlen,
			     "[numa] cpus: no NVIDIA GPU is attached to the nodes of these CPUs (backend cuda)");
		return -EINVAL;
	}
	return 0;
}

static int place_threads(const struct engine_config *c, struct plan *out, char *err, size_t errlen)
{
	for (int j = 0; j < out->n_nodes; j++) {
		struct plan_node *pn = &out->nodes[j];
		int want;
		if (out->backend == CFG_BACKEND_NULL) {
			want = 1;
		} else if (c->threads == 0) {
			/* cpu: every CPU; cuda: the dispatcher that drives the GPU. */
			want = out->backend == CFG_BACKEND_CUDA ? 1 : pn->n_cpus;
		} else {
			want = c->threads;
		}
		if (want > pn->n_cpus) {
			if (c->pin) {
				errf(err, errlen,
				     "[backend] threads = %d exceeds the %d CPU%s of node %d that the plan may use "
				     "(pin = "
				     "on: list more in [numa] cpus, or set pin = off)",
				     want, pn->n_cpus, pn->n_cpus == 1 ? "" : "s", pn->node);
				return -EINVAL;
			}
			warn(out, "node %d: %d threads on %d CPUs (pin = off): oversubscribed", pn->node, want,
			     pn->n_cpus);
		} else {
			pn->n_cpus = want;
		}
		pn->n_threads = want;
	}
	if (out->backend == CFG_BACKEND_NULL && c->threads > 1)
		warn(out, "[backend] threads = %d is ignored: the null backend runs one thread", c->threads);
	return 0;
}

static bool cpu_used(const struct plan *out, int cpu)
{
	for (int j = 0; j < out->n_nodes; j++)
		for (int k = 0; k < out->nodes[j].n_cpus; k++)
			if (out->nodes[j].cpus[k] == cpu)
				return true;
	return false;
}

static void place_net(const struct engine_config *c, const struct topo *tp, struct plan *out)
{
	struct plan_node *p0 = &out->nodes[0];
	const struct topo_node *tn = &tp->nodes[topo_node_index(tp, p0->node)];
	int want = c->net_threads, got = 0;
	/* 0. With cpus = LIST, listed CPUs of the first node that compute does
	 * not use (cuda runs one thread on a slice of the node; threads = N),
	 * from the end: a process given a slice of a node stays inside it, so
	 * processes sharing a node (one per GPU) do not pile their net
	 * threads onto the node's last core. */
	for (int k = c->n_cpus - 1; k >= 0 && got < want; k--) {
		int cpu = c->cpus[k];
		if (tp->pu_node[cpu] < 0 || tp->nodes[tp->pu_node[cpu]].os != p0->node || cpu_used(out, cpu))
			continue;
		bool dup = false;
		for (int i = 0; i < got; i++)
			dup |= out->net_cpus[i] == cpu;
		if (!dup)
			out->net_cpus[got++] = cpu;
	}
	/* 1. Cores of the first node no compute thread uses, from the end. */
	for (int k = tn->n_cores - 1; k >= 0 && got < want; k--) {
		bool dup = false;
		for (int i = 0; i < got; i++)
			dup |= out->net_cpus[i] == tn->cores[k];
		if (!cpu_used(out, tn->cores[k]) && !dup)
			out->net_cpus[got++] = tn->cores[k];
	}
	/* 2. All automatic: take cores from compute while two remain. */
	bool all_auto = c->n_cpus == 0 && c->threads == 0 && out->backend == CFG_BACKEND_CPU;
	while (all_auto && got < want && p0->n_cpus > 2) {
		out->net_cpus[got++] = p0->cpus[--p0->n_cpus];
		p0->n_threads = p0->n_cpus;
	}
	/* 3. Share the last compute CPUs. */
	int first_shared = got;
	for (int i = 0; got < want; i++)
		out->net_cpus[got++] = p0->cpus[p0->n_cpus - 1 - i % p0->n_cpus];
	out->n_net_cpus = got;
	if (first_shared < got) {
		out->net_shared = true;
		char list[128];
		plan_fmt_cpus(list, sizeof(list), out->net_cpus + first_shared, got - first_shared);
		warn(out,
		     "%d net thread%s share%s CPU %s with compute threads of node %d (no spare core: "
		     "node %d has %d core%s for compute)",
		     got - first_shared, got - first_shared > 1 ? "s" : "", got - first_shared > 1 ? "" : "s", list,
		     p0->node, p0->node, tn->n_cores, tn->n_cores == 1 ? "" : "s");
	}
}

/* KV pool and scratch of each plan node. */
static int place_memory(const struct engine_config *c, const struct topo *tp, const struct shape *s, struct plan *out,
			char *err, size_t errlen)
{
	int64_t bpt = s->n_layer * s->n_head_kv * s->head_dim * 2 * 2; /* K and V, f16 */
	out->kv_bytes_per_token = bpt;
	out->weight_bytes = s->weight_bytes;
	if (bpt <= 0) {
		errf(err, errlen, "[model] path: the model has no KV cache (bytes per token %" PRId64 ")", bpt);
		return -EINVAL;
	}
	int64_t bs = c->kv_block_size;
	int64_t tokens = c->kv_tokens > 0 ? c->kv_tokens : c->kv_memory_bytes / bpt;
	tokens -= tokens % bs;
	if (tokens < bs) {
		if (c->kv_tokens > 0)
			errf(err, errlen,
			     "[kv] tokens = %" PRId64 ": less than one block of %" PRId64 " tokens (block_size)",
			     c->kv_tokens, bs);
		else
			errf(err, errlen,
			     "[kv] memory = %" PRId64 " MiB holds %" PRId64 " tokens of %" PRId64
			     " bytes: less than one block of %" PRId64 " tokens (block_size)",
			     c->kv_memory_bytes >> 20, c->kv_memory_bytes / bpt, bpt, bs);
		return -EINVAL;
	}
	if (tokens / bs > INT32_MAX || tokens > INT64_MAX / bpt) {
		errf(err, errlen, "[kv] %s: %" PRId64 " tokens is more blocks than the KV allocator indexes (2^31 - 1)",
		     c->kv_tokens > 0 ? "tokens" : "memory", tokens);
		return -EINVAL;
	}
	/* Scratch, as the CPU backend carves it for T = step_tokens rows, the
	 * activation rows bounded by 4 bytes per element, plus one logits row
	 * per running sequence. */
	int64_t T = c->step_tokens, E = s->n_embd, qd = s->n_head * s->head_dim, kvd = s->n_head_kv * s->head_dim;
	int64_t F = s->n_ff, hd = s->head_dim;
	int64_t widest = E > F ? E : F;
	widest = widest > qd ? widest : qd;
	int64_t logits = (int64_t)c->max_seqs * s->n_vocab * 4;
	int64_t scratch =
	    T * (3 * E + 2 * qd + 2 * kvd + 2 * F + hd) * 4 + 3 * T * ((widest * 4 + 63) & ~INT64_C(63)) + logits;
	if (out->backend == CFG_BACKEND_NULL)
		scratch = logits;
	for (int j = 0; j < out->n_nodes; j++) {
		struct plan_node *pn = &out->nodes[j];
		pn->kv_tokens = tokens;
		pn->kv_bytes = tokens * bpt;
		pn->scratch_bytes = scratch;
		int i = topo_node_index(tp, pn->node);
		int64_t need = pn->kv_bytes + pn->scratch_bytes;
		if (pn->gpu < 0 && i >= 0 && tp->nodes[i].mem_bytes > 0 && need > tp->nodes[i].mem_bytes)
			warn(out,
			     "node %d: KV and scratch (%" PRId64 " MiB) exceed the node's %" PRId64 " MiB of memory",
			     pn->node, need >> 20, tp->nodes[i].mem_bytes >> 20);
	}
	if (tokens < out->ctx)
		warn(out,
		     "KV pool of %" PRId64 " tokens per node is smaller than one full context (ctx = %" PRId64
		     "): the longest requests cannot run",
		     tokens, out->ctx);
	return 0;
}

int plan_resolve_ex(const struct engine_config *c, const char *synthetic, unsigned flags, struct plan *out, char *err,
		    size_t errlen)
{
	memset(out, 0, sizeof(*out));
	int rc = config_check(c, err, errlen);
	if (rc)
		return rc;
	struct topo *tp = alloc_zmem(sizeof(*tp));
	if (!tp) {
		errf(err, errlen, "plan: out of memory");
		return -ENOMEM;
	}
	rc = topo_load(tp, synthetic, out, err, errlen);
	if (rc)
		goto out;

#ifdef LOCUS_HAVE_CUDA
	bool have_cuda = true;
#else
	bool have_cuda = (flags & PLAN_ASSUME_CUDA) != 0;
#endif
	out->backend = c->backend;
	if (c->backend == CFG_BACKEND_AUTO) {
		out->backend = tp->n_gpus && have_cuda ? CFG_BACKEND_CUDA : CFG_BACKEND_CPU;
		if (tp->n_gpus && !have_cuda)
			warn(out, "%d NVIDIA GPU%s found, but this build has no CUDA backend: using the CPU",
			     tp->n_gpus, tp->n_gpus > 1 ? "s" : "");
	} else if (c->backend == CFG_BACKEND_CUDA) {
		rc = -EINVAL;
		if (!have_cuda) {
			errf(err, errlen, "[backend] type = cuda: this build has no CUDA backend (nvcc was not found)");
			goto out;
		}
		if (!tp->n_gpus) {
			errf(err, errlen, "[backend] type = cuda: no NVIDIA GPU found");
			goto out;
		}
		rc = 0;
	}
	out->pin = c->pin;
	out->membind = c->membind;

	struct shape s;
	rc = shape_load(c, out->backend, (flags & PLAN_NO_MODEL) != 0, &s, out, err, errlen);
	if (rc)
		goto out;
	out->ctx = c->ctx > 0 ? c->ctx : s.n_ctx_train;
	if (out->ctx <= 0) {
		errf(err, errlen, "[model] ctx: the model does not say its context length; set ctx");
		rc = -EINVAL;
		goto out;
	}
	if (c->ctx > 0 && s.n_ctx_train > 0 && c->ctx > s.n_ctx_train)
		warn(out, "[model] ctx = %" PRId64 " exceeds the model's training context of %" PRId64, c->ctx,
		     s.n_ctx_train);
	if (c->max_tokens_limit > out->ctx) {
		errf(err, errlen, "[limits] max_tokens = %" PRId64 " exceeds the context of %" PRId64 " tokens",
		     c->max_tokens_limit, out->ctx);
		rc = -EINVAL;
		goto out;
	}

	rc = place_nodes(c, tp, out, err, errlen);
	if (rc)
		goto out;
	if (out->backend == CFG_BACKEND_NULL) {
		out->n_nodes = 1;
	} else if (out->backend == CFG_BACKEND_CUDA) {
		rc = place_gpus(c, tp, out, err, errlen);
		if (rc)
			goto out;
	}
	if (c->n_gpus && out->backend != CFG_BACKEND_CUDA)
		warn(out, "[backend] gpus is ignored: the backend is %s, not cuda", backend_name(out->backend));
	rc = place_threads(c, out, err, errlen);
	if (rc)
		goto out;
	place_net(c, tp, out);
	rc = place_memory(c, tp, &s, out, err, errlen);
	if (rc)
		goto out;
	if (!c->pin)
		warn(out, "pin = off: threads are not pinned; the CPUs shown are where they would run");
out:
	alloc_free(tp);
	return rc;
}

int plan_resolve(const struct engine_config *c, const char *synthetic, struct plan *out, char *err, size_t errlen)
{
	return plan_resolve_ex(c, synthetic, 0, out, err, errlen);
}

/* ---- printing ---- */

static double mib(int64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

/* "92.1 MiB", "22.4 KiB", "0 B" */
static const char *fmt_bytes(char *buf, size_t len, int64_t b)
{
	if (b >= 1 << 20)
		snprintf(buf, len, "%.1f MiB", mib(b));
	else if (b >= 1 << 10)
		snprintf(buf, len, "%.1f KiB", (double)b / 1024.0);
	else
		snprintf(buf, len, "%" PRId64 " B", b);
	return buf;
}

void plan_print(const struct engine_config *c, const struct plan *p, void *file)
{
	FILE *f = file;
	char list[1024];
	const char *pinned = p->pin ? "pinned" : "not pinned";
	fprintf(f, "topology:  %s\n", p->topology);
	char gpus[320] = "", glist[256];
	if (c->n_gpus) {
		plan_fmt_cpus(glist, sizeof(glist), c->gpus, c->n_gpus);
		snprintf(gpus, sizeof(gpus), ", gpus = %s%s", glist,
		         p->backend == CFG_BACKEND_CUDA ? "" : " (ignored)");
	}
	if (c->backend == p->backend)
		fprintf(f, "backend:   %s%s\n", backend_name(p->backend), gpus);
	else
		fprintf(f, "backend:   %s (type = %s)%s\n", backend_name(p->backend), backend_name(c->backend), gpus);
	if (p->model_fixed_shape)
		fprintf(f, "model:     none (fixed shape for the null backend), served as \"%s\"\n", p->model_name);
	else
		fprintf(f, "model:     %s, served as \"%s\"\n", c->model_path, p->model_name);
	char b1[32], b2[32];
	fprintf(f, "           weights %s, ctx %" PRId64 ", %" PRId64 " bytes per KV token\n",
	        fmt_bytes(b1, sizeof(b1), p->weight_bytes), p->ctx, p->kv_bytes_per_token);
	fprintf(f, "batching:  %d sequences, %d tokens per step, prefill chunks of %d\n", c->max_seqs, c->step_tokens,
	        c->prefill_chunk);
	for (int j = 0; j < p->n_nodes; j++) {
		const struct plan_node *pn = &p->nodes[j];
		char head[48], gpu[32] = "";
		snprintf(head, sizeof(head), "node %d:", pn->node);
		if (pn->gpu >= 0)
			snprintf(gpu, sizeof(gpu), "GPU %d, host ", pn->gpu);
		plan_fmt_cpus(list, sizeof(list), pn->cpus, pn->n_cpus);
		fprintf(f, "%-10s %s%s %s (%s), %d thread%s, dispatcher on CPU %d\n", head, gpu,
		        pn->gpu >= 0 ? "CPUs" : "compute CPUs", list, pinned, pn->n_threads,
		        pn->n_threads == 1 ? "" : "s", pn->cpus[0]);
		fprintf(f, "           KV %" PRId64 " tokens (%" PRId64 " blocks of %d) %s%s, scratch %s, memory %s\n",
		        pn->kv_tokens, pn->kv_tokens / c->kv_block_size, c->kv_block_size,
		        fmt_bytes(b1, sizeof(b1), pn->kv_bytes), pn->gpu >= 0 ? " on the GPU" : "",
		        fmt_bytes(b2, sizeof(b2), pn->scratch_bytes), policy_name(p->membind));
	}
	plan_fmt_cpus(list, sizeof(list), p->net_cpus, p->n_net_cpus);
	const char *lb = strchr(c->host, ':') ? "[" : "", *rb = strchr(c->host, ':') ? "]" : "";
	fprintf(f, "net:       %d thread%s on CPU %s (%s%s), listening on %s%s%s:%d\n", p->n_net_cpus,
	        p->n_net_cpus == 1 ? "" : "s", list, pinned, p->net_shared ? ", shared with compute" : "", lb, c->host,
	        rb, c->port);
	char inst[CFG_INSTANCE_MAX + 1];
	config_instance_name(c, c->port, inst, sizeof(inst));
	const char *how = "";
	if (!c->instance[0])
		how = c->port ? " (hostname:port)" : " (hostname:port, the port bound at start)";
	fprintf(f, "instance:  %s%s\n", inst, how);
	if (p->n_warnings) {
		fprintf(f, "warnings:\n");
		for (int i = 0; i < p->n_warnings; i++)
			fprintf(f, "  - %s\n", p->warnings[i]);
	}
}
