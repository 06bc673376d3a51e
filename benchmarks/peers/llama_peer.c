// llama.cpp's side of the peer benchmark and of the GGUF export test, on the prebuilt libllama of
// @node-llama-cpp/linux-x64 (see package.json for the pinned version; build.sh compiles this against the headers of
// that exact llama.cpp release, taken from node-llama-cpp's bundled source).
//
//   llama_peer logits   MODEL.gguf LORA.gguf|- THREADS OUT.f32 ID,ID,...   float32 logits of every position, raw
//                                                                           little-endian [n_ids][n_vocab] in OUT.f32
//   llama_peer bench    MODEL.gguf LORA.gguf|- THREADS PROMPT GEN           one warm-up, then PROMPT ids in one
//                                                                           llama_decode and GEN greedy steps; prints
//                                                                           "prefill_ms=… decode_ms_per_token=…"
//   llama_peer serve    MODEL.gguf LORA.gguf|- THREADS PROMPT GEN           loads once, says "ready", then for each
//                                                                           line "base" or "lora" on stdin runs as
//                                                                           bench does (adapter off / on) and
//                                                                           prints its line; "quit" ends
//   llama_peer quantize IN.gguf OUT.gguf q8_0|q4_0 THREADS                 llama.cpp's own quantizer (as llama-quantize)
//
// LLAMA_PEER_VERBOSE=1 keeps llama.cpp's log on stderr.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "llama.h"

static int verbose;

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void) user;
    if (verbose || level >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, const char *arg) {
    fprintf(stderr, "llama_peer: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    exit(1);
}

static void init_backends(const char *self) {
    llama_log_set(quiet_log, NULL);
    // the CPU backends (one per ISA level) lie beside libllama; LLAMA_PEER_BACKENDS names their folder
    const char *dir = getenv("LLAMA_PEER_BACKENDS");
    if (dir == NULL) {
        die("LLAMA_PEER_BACKENDS is not set (the folder of libggml-cpu-*.so)", self);
    }
    ggml_backend_load_all_from_path(dir);
    llama_backend_init();
}

struct loaded {
    struct llama_model *model;
    struct llama_adapter_lora *lora;
    struct llama_context *ctx;
    int n_vocab;
};

static struct loaded load(const char *model_path, const char *lora_path, int threads, int n_ctx, int exact) {
    struct loaded l = {0};
    struct llama_model_params mp = llama_model_default_params();
    l.model = llama_model_load_from_file(model_path, mp);
    if (l.model == NULL) {
        die("cannot load model", model_path);
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = 1;
    if (exact) {
        // the conformance check: float32 KV cache and plain attention, so only the weights' format differs
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    l.ctx = llama_init_from_model(l.model, cp);
    if (l.ctx == NULL) {
        die("cannot create a context for", model_path);
    }
    if (strcmp(lora_path, "-") != 0) {
        l.lora = llama_adapter_lora_init(l.model, lora_path);
        if (l.lora == NULL) {
            die("cannot load LoRA adapter", lora_path);
        }
        float scale = 1.0f;
        if (llama_set_adapters_lora(l.ctx, &l.lora, 1, &scale) != 0) {
            die("cannot apply LoRA adapter", lora_path);
        }
    }
    l.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(l.model));
    return l;
}

static void unload(struct loaded *l) {
    llama_free(l->ctx);
    if (l->lora) {
        llama_adapter_lora_free(l->lora);
    }
    llama_model_free(l->model);
}

static int parse_ids(const char *s, llama_token **out) {
    int cap = 16, n = 0;
    llama_token *ids = malloc(cap * sizeof *ids);
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0) {
            die("bad token id list", s);
        }
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, cap * sizeof *ids);
        }
        ids[n++] = (llama_token) v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            die("bad token id list", s);
        }
    }
    *out = ids;
    return n;
}

static int cmd_logits(char **argv) {
    llama_token *ids;
    int n = parse_ids(argv[6], &ids);
    struct loaded l = load(argv[2], argv[3], atoi(argv[4]), n < 16 ? 16 : n, 1);
    for (int i = 0; i < n; i++) {
        if (ids[i] >= l.n_vocab) {
            die("token id beyond the vocabulary", argv[6]);
        }
    }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(l.ctx, b) != 0) {
        die("llama_decode failed", argv[2]);
    }
    FILE *f = fopen(argv[5], "wb");
    if (f == NULL) {
        die("cannot write", argv[5]);
    }
    for (int i = 0; i < n; i++) {
        const float *row = llama_get_logits_ith(l.ctx, i);
        if (fwrite(row, sizeof(float), l.n_vocab, f) != (size_t) l.n_vocab) {
            die("short write", argv[5]);
        }
    }
    fclose(f);
    printf("n_vocab=%d n_tokens=%d\n", l.n_vocab, n);
    llama_batch_free(b);
    unload(&l);
    free(ids);
    return 0;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

// prompt ids 1 + 7i mod vocab, the same as the peft4j side (PeerDecode.java)
static void run_once(struct loaded *l, int prompt, int gen, double *prefill_ms, double *decode_ms) {
    llama_memory_clear(llama_get_memory(l->ctx), 1);
    llama_token *ids = malloc(prompt * sizeof *ids);
    for (int i = 0; i < prompt; i++) {
        ids[i] = (llama_token) ((1 + 7L * i) % l->n_vocab);
    }
    double t0 = now_ms();
    if (llama_decode(l->ctx, llama_batch_get_one(ids, prompt)) != 0) {
        die("llama_decode failed (prefill)", NULL);
    }
    llama_token next = argmax(llama_get_logits_ith(l->ctx, -1), l->n_vocab);
    double t1 = now_ms();
    for (int i = 0; i < gen; i++) {
        if (llama_decode(l->ctx, llama_batch_get_one(&next, 1)) != 0) {
            die("llama_decode failed (decode)", NULL);
        }
        next = argmax(llama_get_logits_ith(l->ctx, -1), l->n_vocab);
    }
    double t2 = now_ms();
    *prefill_ms = t1 - t0;
    *decode_ms = gen > 0 ? (t2 - t1) / gen : 0;
    free(ids);
}

static int cmd_bench(char **argv) {
    int threads = atoi(argv[4]), prompt = atoi(argv[5]), gen = atoi(argv[6]);
    if (threads < 1 || prompt < 1 || gen < 0) {
        die("THREADS and PROMPT must be >= 1, GEN >= 0", NULL);
    }
    struct loaded l = load(argv[2], argv[3], threads, prompt + gen + 1, 0);
    double p, d;
    run_once(&l, prompt, gen < 4 ? gen : 4, &p, &d); // warm-up: pages in the weights, sizes the buffers
    run_once(&l, prompt, gen, &p, &d);
    printf("prefill_ms=%.3f decode_ms_per_token=%.3f\n", p, d);
    unload(&l);
    return 0;
}

static int cmd_serve(char **argv) {
    int threads = atoi(argv[4]), prompt = atoi(argv[5]), gen = atoi(argv[6]);
    if (threads < 1 || prompt < 1 || gen < 0) {
        die("THREADS and PROMPT must be >= 1, GEN >= 0", NULL);
    }
    struct loaded l = load(argv[2], argv[3], threads, prompt + gen + 1, 0);
    double p, d;
    run_once(&l, prompt, gen < 4 ? gen : 4, &p, &d);
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, "quit") == 0) {
            break;
        }
        int lora = strcmp(line, "lora") == 0;
        if (!lora && strcmp(line, "base") != 0) {
            die("expected base, lora or quit, got", line);
        }
        if (lora && l.lora == NULL) {
            die("lora asked for, but no adapter was loaded", NULL);
        }
        float scale = 1.0f;
        if (llama_set_adapters_lora(l.ctx, lora ? &l.lora : NULL, lora ? 1 : 0, &scale) != 0) {
            die("cannot set the adapters", NULL);
        }
        run_once(&l, prompt, gen, &p, &d);
        printf("prefill_ms=%.3f decode_ms_per_token=%.3f\n", p, d);
        fflush(stdout);
    }
    unload(&l);
    return 0;
}

static int cmd_quantize(char **argv) {
    struct llama_model_quantize_params qp = llama_model_quantize_default_params();
    if (strcmp(argv[4], "q8_0") == 0) {
        qp.ftype = LLAMA_FTYPE_MOSTLY_Q8_0;
    } else if (strcmp(argv[4], "q4_0") == 0) {
        qp.ftype = LLAMA_FTYPE_MOSTLY_Q4_0;
    } else {
        die("quantize type must be q8_0 or q4_0, got", argv[4]);
    }
    qp.nthread = atoi(argv[5]);
    if (llama_model_quantize(argv[2], argv[3], &qp) != 0) {
        die("llama_model_quantize failed for", argv[2]);
    }
    return 0;
}

int main(int argc, char **argv) {
    verbose = getenv("LLAMA_PEER_VERBOSE") != NULL;
    if (argc == 7 && strcmp(argv[1], "logits") == 0) {
        init_backends(argv[0]);
        return cmd_logits(argv);
    }
    if (argc == 7 && strcmp(argv[1], "bench") == 0) {
        init_backends(argv[0]);
        return cmd_bench(argv);
    }
    if (argc == 7 && strcmp(argv[1], "serve") == 0) {
        init_backends(argv[0]);
        return cmd_serve(argv);
    }
    if (argc == 6 && strcmp(argv[1], "quantize") == 0) {
        init_backends(argv[0]);
        return cmd_quantize(argv);
    }
    fprintf(stderr, "usage: llama_peer logits MODEL LORA|- THREADS OUT.f32 ID,ID,...\n"
                    "       llama_peer bench MODEL LORA|- THREADS PROMPT GEN\n"
                    "       llama_peer serve MODEL LORA|- THREADS PROMPT GEN\n"
                    "       llama_peer quantize IN OUT q8_0|q4_0 THREADS\n");
    return 2;
}
