/*
 * config.h: the engine's configuration (an INI file read with inih), the
 * command-line overrides, and the placement plan resolved against the
 * machine's topology (hwloc): which NUMA nodes serve, which cores run the
 * net threads, each node's dispatcher and compute workers, and how memory
 * is bound. `engine --check-config FILE` prints the plan without serving.
 *
 * Order of precedence: defaults < the file < LOCUS_API_KEY < command-line
 * overrides (config_set). Every key, its default and range, and the
 * placement rules are in docs/CONFIG.md.
 *
 * Threading: none of this is thread-safe or needs to be; it runs once, at
 * start-up, before any engine thread exists. No global state.
 */
#ifndef LOCUS_ENGINE_CONFIG_H
#define LOCUS_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/alloc.h"

enum cfg_backend { CFG_BACKEND_AUTO = 0, CFG_BACKEND_CPU, CFG_BACKEND_CUDA, CFG_BACKEND_NULL };

#define CFG_MAX_CPUS 1024
#define CFG_MAX_NODES 64
#define CFG_MAX_NET_THREADS 256 /* [server] net_threads: 1..256 */
#define CFG_MAX_GPUS     64
#define CFG_INSTANCE_MAX 63 /* [server] instance: 1..63 characters of A-Z a-z 0-9 . _ : - */

struct engine_config {
	/* [server] */
	char host[64];             /* listen = HOST:PORT, default 127.0.0.1:8080 */
	int port;
	int net_threads;           /* default 1 */
	char api_key[256];         /* "" = none; LOCUS_API_KEY in the environment overrides */
	int max_conns;             /* per net thread, default 4096 */
	char instance[CFG_INSTANCE_MAX + 1]; /* X-Locus-Instance; "" = "<hostname>:<port>" (config_instance_name) */
	/* [model] */
	char model_path[1024];
	char model_name[128];      /* served name; default: file name without .gguf */
	int64_t ctx;               /* max tokens per sequence; 0 = the model's context length */
	char chat_template[32];    /* "" (from the GGUF), "chatml", "llama2", "llama3" */
	/* [backend] */
	enum cfg_backend backend;  /* auto: cuda when a GPU is present and built, else cpu */
	int threads;               /* compute threads per node; 0 = auto (all cores of the node's cpus) */
	int null_delay_us;         /* null backend: simulated step time, default 0 */
	int gpus[CFG_MAX_GPUS];    /* cuda: CUDA devices to serve (gpus = 0,5); n_gpus 0 = auto (all) */
	int n_gpus;
	/* [numa] */
	int node;                  /* -1 = auto: every node with cores (cpu), the GPU's node (cuda) */
	int cpus[CFG_MAX_CPUS];    /* explicit CPU list (cpus = 0-3,8); n_cpus 0 = auto */
	int n_cpus;
	bool pin;                  /* pin = on|off, default on */
	enum alloc_policy membind; /* strict | preferred | off, default preferred */
	/* [batching] */
	int max_seqs;              /* running sequences per node, default 16 */
	int step_tokens;           /* token budget of one step (prefill chunks + decode), default 512 */
	int prefill_chunk;         /* max prompt tokens of one sequence per step, default 256 */
	/* [kv] */
	int64_t kv_tokens;         /* KV pool per node in tokens; 0 = from kv_memory */
	int64_t kv_memory_bytes;   /* [kv] memory = 512MiB; default 256 MiB; used when kv_tokens is 0 */
	int kv_block_size;         /* default 16 */
	/* [limits] */
	size_t max_body_bytes;     /* default 1 MiB */
	size_t max_header_bytes;   /* default 8 KiB */
	int header_timeout_ms;     /* default 10 s */
	int idle_timeout_ms;       /* default 60 s */
	int request_timeout_ms;    /* whole request deadline, default 600 s; 0 = none */
	int max_waiting;           /* waiting requests per node before 429/503, default 256 */
	int ring_slots;            /* request ring capacity per node, power of two, default 1024 */
	int64_t max_tokens_limit;  /* [limits] max_tokens: upper bound for max_tokens, default 0 = the context */
	int drain_timeout_ms;      /* SIGTERM: time for in-flight requests, default 30 s */
};

void config_default(struct engine_config *c);
/* Parses an INI file over *c (the defaults, or an earlier file), then checks
 * the keys against each other (config_check) and applies LOCUS_API_KEY
 * (config_apply_env). Unknown sections/keys, duplicate keys and bad values
 * are errors naming "FILE:LINE: [section] key = value: what was expected".
 * 0 or -errno (-EINVAL for a bad file); *c is left unchanged on error. */
int config_load(struct engine_config *c, const char *path, char *err, size_t errlen);
/* The same on text in memory (len bytes, NUL bytes rejected); `name` stands
 * for the file name in messages. For tests and the fuzzer. */
int config_parse(struct engine_config *c, const char *text, size_t len, const char *name, char *err, size_t errlen);
/* One override (section "server", key "listen", ...): the CLI forms map onto
 * it; same validation as the file; *c unchanged on error. The keys are not
 * checked against each other: call config_check after the last override. */
int config_set(struct engine_config *c, const char *section, const char *key, const char *value, char *err,
	       size_t errlen);
/* Checks between keys: prefill_chunk <= step_tokens, max_seqs <= step_tokens,
 * max_tokens <= ctx (when both are set). 0 or -EINVAL. */
int config_check(const struct engine_config *c, char *err, size_t errlen);
/* LOCUS_API_KEY, when set and not empty, replaces api_key (validated as the
 * key is). config_load calls it; call it yourself when there is no file. */
int config_apply_env(struct engine_config *c, char *err, size_t errlen);
/* The name this process answers with in X-Locus-Instance: [server] instance,
 * or "<hostname>:<port>" (the short host name, characters outside
 * [A-Za-z0-9._-] replaced by '-', cut so the whole fits 63 characters) when
 * it is empty. `port` is the port actually bound (listen = HOST:0 picks
 * one). Always writes a valid name into out (len >= CFG_INSTANCE_MAX + 1). */
void config_instance_name(const struct engine_config *c, int port, char *out, size_t len);

/* ---- placement plan ---- */
#define PLAN_MAX_WARNINGS 16
#define PLAN_WARNING_LEN 192
#define PLAN_MAX_GPUS     CFG_MAX_GPUS

/* An NVIDIA GPU as the plan sees it (PCI class 03xx, vendor 0x10de). */
struct plan_gpu {
	int index;       /* CUDA device index (cudaN when hwloc names it, else PCI order) */
	int node;        /* the NUMA node it is placed on (local, with cores) */
	char busid[24];  /* "0000:18:00.0" */
};

struct plan_node {
	int node;              /* NUMA node id */
	int cpus[CFG_MAX_CPUS];/* compute CPUs; cpus[0] runs the dispatcher (which is compute thread 0) */
	int n_cpus;
	int n_threads;         /* compute threads (== n_cpus when pinned) */
	int64_t kv_tokens;
	int64_t kv_bytes;
	int64_t scratch_bytes; /* estimate */
	int gpu;               /* -1, or the CUDA device this node serves */
};

struct plan {
	enum cfg_backend backend;   /* resolved (never AUTO) */
	int n_nodes;
	struct plan_node nodes[CFG_MAX_NODES];
	int net_cpus[CFG_MAX_CPUS]; /* CPU of each net thread when pinned */
	int n_net_cpus;
	bool pin;
	enum alloc_policy membind;
	int64_t weight_bytes;       /* model file tensors (0 with backend null and no model) */
	int64_t kv_bytes_per_token; /* from the model's shape */
	char topology[256];         /* one-line summary: "1 package, 1 NUMA node, 2 cores, no GPU" */
	int64_t ctx;                /* resolved: [model] ctx, or the model's training context */
	char model_name[128];       /* resolved: [model] name, or the file name without .gguf */
	bool model_fixed_shape;     /* backend null without a model: KV sized for a fixed tiny shape */
	int n_gpus;                 /* NVIDIA GPUs found (whether or not they are used) */
	struct plan_gpu gpus[PLAN_MAX_GPUS]; /* the n_gpus GPUs, by index */
	bool net_shared;            /* a net thread shares its CPU with compute */
	char warnings[PLAN_MAX_WARNINGS][PLAN_WARNING_LEN]; /* plan_print lists them */
	int n_warnings;
};

/*
 * Resolves the plan from the config and the machine (hwloc; `synthetic`, when
 * not NULL, is an hwloc synthetic topology description used instead, for
 * tests, e.g. "pack:2 numa:1 core:4 pu:1", or the path of an hwloc XML
 * topology when it ends in ".xml"; the process's own CPU binding is applied
 * only to the real machine). Runs config_check first. Opens the model only to
 * read its shape. Errors (a node that does not exist, a CPU outside the
 * allowed set, a KV pool below one block) name the key. 0 or -errno.
 */
int plan_resolve(const struct engine_config *c, const char *synthetic, struct plan *out, char *err, size_t errlen);
/* plan_resolve with flags: PLAN_ASSUME_CUDA plans as if this build had the
 * CUDA backend (tests of GPU placement, checking a config for a CUDA build). */
#define PLAN_ASSUME_CUDA 1u
/* PLAN_NO_MODEL: without [model] path, size memory for the null backend's
 * fixed shape whatever the backend (tools that show placement only). */
#define PLAN_NO_MODEL 2u
int plan_resolve_ex(const struct engine_config *c, const char *synthetic, unsigned flags, struct plan *out, char *err,
		    size_t errlen);
/* The hwloc topology plan_resolve reads: this machine with its important I/O
 * devices (PCI through sysfs), or `synthetic` as above. For tools that
 * describe the machine as the plan sees it (topo-capture). Free it with
 * hwloc_topology_destroy(). 0 or -errno, with a message in err. */
struct hwloc_topology;
/* "0-3,8,10-11" (list order kept, runs of consecutive ascending numbers
 * joined), "none" for an empty list. */
void plan_fmt_cpus(char *buf, size_t len, const int *cpus, int n);
int plan_topology_load(struct hwloc_topology **out, const char *synthetic, char *err, size_t errlen);
/* Human-readable plan, as `engine --check-config` prints it. */
void plan_print(const struct engine_config *c, const struct plan *p, void *file /* FILE * */);

#endif
