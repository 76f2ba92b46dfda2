/* The compiled datagram core: frame datagrams encoded for one segmented send (the publisher), and
 * received in recvmmsg batches and reassembled (the receiver).
 *
 * A twin of common/protocol.py's encode_frame and decode_datagram and of common/reassembly.py's
 * FrameAssembler, which stay the reference: the same checks in the same order, the same counters under
 * the same names, the same bounds (docs/PROTOCOL.md section 1). The unit tests and fuzzers run against
 * both, and a differential fuzzer feeds both the same hostile sequences and compares every frame and
 * counter.
 *
 * Why compiled: in Python every datagram costs a socket call, a header unpack, a CRC, a bytes copy and
 * a few dict operations, ~7 us in all; a 48 KB frame in 1,400-byte datagrams is 36 of them. Here a
 * recvmmsg call fetches up to 64 datagrams and each is checked and copied straight into its frame's
 * buffer, with the GIL released, so the receiver's other threads (and further ingest threads) run
 * meanwhile. Python objects are made once per frame, not per datagram.
 *
 * Thread safety: every Assembler method takes the assembler's own lock; a RecvBatch is used by one
 * thread at a time (checked). Signed datagrams are verified with OpenSSL's HMAC-SHA256 (libcrypto)
 * and compared in constant time (CRYPTO_memcmp), as the Python path does through hmac; the CRC is
 * zlib's crc32, as Python's zlib.crc32.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <zlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/params.h>
#else
#include <openssl/hmac.h>
#endif

/* ----- the wire format (docs/PROTOCOL.md section 1) ---------------------------------------------- */

#define HEADER_BYTES 34
#define CRC_OFFSET 30
#define MAC_BYTES 16
#define FLAG_SIGNED 0x01
#define RESTART_DISTANCE 256u
#define REPLAY_WINDOW_FRAMES 64u
#define MAX_REPLAY_STREAMS 1024
#define REPLAY_BUCKETS 2048 /* a power of two, twice MAX_REPLAY_STREAMS */
#define SRC_KEY_BYTES 19    /* family, port (2), address (4 or 16) */
#define FIRST_BUFFER_BYTES 65536u

/* Counter names, in the order of the enum; the same names as common/reassembly.py. */
enum {
    C_DATAGRAMS, C_BYTES, C_SHORT, C_BAD_MAGIC, C_BAD_VERSION, C_BAD_FLAGS, C_BAD_LENGTH, C_BAD_CHUNK,
    C_BAD_CHECKSUM, C_TOO_LARGE, C_INCONSISTENT, C_CORRUPT, C_SIGNED_UNVERIFIED, C_DROPPED_UNSIGNED,
    C_DROPPED_FORGED, C_DROPPED_REPLAYED, C_LATE, C_DUPLICATE, C_FRAMES_INCOMPLETE, C_EVICTED_FOR_MEMORY,
    C_STREAMS_EVICTED, C_FRAMES_COMPLETE, C_SOCKET_ERRORS, C_NO_MEMORY, C_COUNT
};
static const char *const COUNTER_NAMES[C_COUNT] = {
    "datagrams", "bytes", "short", "bad_magic", "bad_version", "bad_flags", "bad_length", "bad_chunk",
    "bad_checksum", "too_large", "inconsistent", "corrupt", "signed_unverified", "dropped_unsigned",
    "dropped_forged", "dropped_replayed", "late", "duplicate", "frames_incomplete", "evicted_for_memory",
    "streams_evicted", "frames_complete", "socket_errors", "no_memory",
};

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* True when 32-bit sequence number a comes after b (serial-number arithmetic, RFC 1982). */
static inline int seq_newer(uint32_t a, uint32_t b) {
    uint32_t diff = a - b;
    return diff != 0 && diff < 0x80000000u;
}

/* CRC-32 as zlib.crc32: zlib's own (the library Python's zlib module uses). */
static inline uint32_t crc32_more(uint32_t crc, const uint8_t *p, size_t n) { return (uint32_t)crc32_z(crc, p, n); }

/* ----- the MAC ----------------------------------------------------------------------------------- */

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
typedef EVP_MAC_CTX MacCtx;
static EVP_MAC *hmac_algorithm; /* fetched once at import; contexts are per user */

static MacCtx *mac_new(const void *key, size_t len) {
    MacCtx *ctx = hmac_algorithm ? EVP_MAC_CTX_new(hmac_algorithm) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (ctx && !EVP_MAC_init(ctx, key, len, params)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
static void mac_free(MacCtx *ctx) { EVP_MAC_CTX_free(ctx); }

/* HMAC-SHA256 of d[0..n) with the context's key into out (32 bytes); 0 on a library error. */
static int mac_compute(MacCtx *ctx, const uint8_t *d, size_t n, unsigned char *out) {
    size_t outlen = 0;
    return EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, d, n) &&
           EVP_MAC_final(ctx, out, &outlen, EVP_MAX_MD_SIZE) && outlen >= MAC_BYTES;
}
#else
typedef HMAC_CTX MacCtx;

static MacCtx *mac_new(const void *key, size_t len) {
    MacCtx *ctx = HMAC_CTX_new();
    if (ctx && !HMAC_Init_ex(ctx, key, (int)len, EVP_sha256(), NULL)) {
        HMAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
static void mac_free(MacCtx *ctx) { HMAC_CTX_free(ctx); }

static int mac_compute(MacCtx *ctx, const uint8_t *d, size_t n, unsigned char *out) {
    unsigned int outlen = 0;
    return HMAC_Init_ex(ctx, NULL, 0, NULL, NULL) && HMAC_Update(ctx, d, n) && HMAC_Final(ctx, out, &outlen) &&
           outlen >= MAC_BYTES;
}
#endif

/* ----- state ------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t bytes[SRC_KEY_BYTES];
    uint8_t len;
} SrcKey;

typedef struct Partial {
    struct Partial *prev, *next; /* insertion order within the stream */
    uint32_t seq, frame_len, size, received, cap;
    uint16_t count;
    int in_order; /* every chunk so far arrived as 0, 1, 2, ...: buf is the frame as it stands */
    uint64_t capture_ns;
    double first_at;
    uint8_t *buf;     /* chunk payloads in arrival order */
    uint32_t *offset; /* per chunk index: where its payload sits in buf */
    uint16_t *len;    /* per chunk index: its payload length, 0 while missing */
} Partial;

typedef struct Stream {
    struct Stream *prev, *next; /* least recently heard first */
    SrcKey src;
    uint32_t stream_id, last_done;
    int has_done, npartials;
    double last_seen;
    Partial *head, *tail;
} Stream;

typedef struct {
    int used;
    uint32_t seq, nwords;
    uint64_t *bits;
} ReplaySlot;

typedef struct Window {
    struct Window *prev, *next, *chain; /* LRU list; hash bucket chain */
    uint32_t stream_id, newest;
    int has_newest;
    ReplaySlot slot[REPLAY_WINDOW_FRAMES]; /* kept seqs lie within 64 of newest: seq % 64 is unique */
} Window;

/* A frame completed while the GIL was released: turned into a Python Frame afterwards. */
typedef struct {
    uint8_t *data;
    uint32_t len, stream_id, seq, chunks;
    uint64_t capture_ns;
    double first_at, completed_at;
    SrcKey src;
} Done;

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    PyObject *frame_type;
    uint64_t max_frame_bytes, max_buffered_bytes;
    uint32_t max_chunks;
    long max_frames_in_flight, max_streams;
    double frame_timeout_s, stream_idle_s;
    int keyed;
    MacCtx *mac;
    uint64_t counters[C_COUNT];
    uint64_t buffered;
    long nstreams, nwindows;
    Stream *shead, *stail;
    Window *whead, *wtail;
    Window *buckets[REPLAY_BUCKETS];
} Assembler;

static inline void lock_assembler(Assembler *a) {
    if (!PyThread_acquire_lock(a->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(a->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

/* ----- partials and streams ---------------------------------------------------------------------- */

static void free_partial(Partial *p) {
    if (p) {
        free(p->buf);
        free(p->offset);
        free(p);
    }
}

static void unlink_partial(Assembler *a, Stream *s, Partial *p) {
    if (p->prev) p->prev->next = p->next; else s->head = p->next;
    if (p->next) p->next->prev = p->prev; else s->tail = p->prev;
    s->npartials--;
    a->buffered -= p->size;
}

static void drop_partial(Assembler *a, Stream *s, Partial *p) {
    unlink_partial(a, s, p);
    free_partial(p);
}

static void unlink_stream(Assembler *a, Stream *s) {
    if (s->prev) s->prev->next = s->next; else a->shead = s->next;
    if (s->next) s->next->prev = s->prev; else a->stail = s->prev;
    a->nstreams--;
}

static void append_stream(Assembler *a, Stream *s) {
    s->next = NULL;
    s->prev = a->stail;
    if (a->stail) a->stail->next = s; else a->shead = s;
    a->stail = s;
    a->nstreams++;
}

/* A stream pushed out by a newer sender: each of its incomplete frames counts as incomplete. */
static void forget_stream(Assembler *a, Stream *s) {
    while (s->head) {
        drop_partial(a, s, s->head);
        a->counters[C_FRAMES_INCOMPLETE]++;
    }
    unlink_stream(a, s);
    free(s);
}

/* The stream of (source, stream id), created (evicting the least recently heard) or moved to the
 * most recent end; NULL when out of memory. */
static Stream *get_stream(Assembler *a, const SrcKey *src, uint32_t stream_id, double now) {
    Stream *s;
    for (s = a->stail; s; s = s->prev)
        if (s->stream_id == stream_id && s->src.len == src->len && !memcmp(s->src.bytes, src->bytes, src->len))
            break;
    if (s) {
        if (s != a->stail) {
            unlink_stream(a, s);
            append_stream(a, s);
        }
    } else {
        while (a->nstreams >= a->max_streams) {
            forget_stream(a, a->shead);
            a->counters[C_STREAMS_EVICTED]++;
        }
        s = calloc(1, sizeof(Stream));
        if (!s) return NULL;
        s->src = *src;
        s->stream_id = stream_id;
        append_stream(a, s);
    }
    s->last_seen = now;
    return s;
}

static int is_late(Stream *s, uint32_t seq) {
    if (!s->has_done || seq_newer(seq, s->last_done)) return 0;
    if ((uint32_t)(s->last_done - seq) > RESTART_DISTANCE) { /* the sender restarted its numbering */
        s->has_done = 0;
        return 0;
    }
    return 1;
}

/* The memory budget: drop the oldest incomplete frames (by first datagram) until `need` more fits.
 * Returns 1 when `mine` was among them. Ties go to the first met, streams least recent first. */
static int make_room(Assembler *a, uint64_t need, Partial *mine) {
    int dropped_mine = 0;
    while (a->buffered + need > a->max_buffered_bytes) {
        Stream *best_s = NULL;
        Partial *best = NULL;
        for (Stream *s = a->shead; s; s = s->next)
            for (Partial *p = s->head; p; p = p->next)
                if (!best || p->first_at < best->first_at) {
                    best = p;
                    best_s = s;
                }
        if (!best) break;
        dropped_mine |= best == mine;
        drop_partial(a, best_s, best);
        a->counters[C_FRAMES_INCOMPLETE]++;
        a->counters[C_EVICTED_FOR_MEMORY]++;
    }
    return dropped_mine;
}

/* Newest frame wins: incomplete frames older than a delivered one will never be used. */
static void drop_older(Assembler *a, Stream *s, uint32_t seq) {
    Partial *p = s->head;
    while (p) {
        Partial *next = p->next;
        if (seq_newer(seq, p->seq)) {
            drop_partial(a, s, p);
            a->counters[C_FRAMES_INCOMPLETE]++;
        }
        p = next;
    }
}

/* ----- replay windows (keyed assemblers) --------------------------------------------------------- */

static inline uint32_t window_bucket(uint32_t stream_id) { return (stream_id * 2654435761u) >> 21; }

static void free_window(Window *w) {
    for (unsigned i = 0; i < REPLAY_WINDOW_FRAMES; i++) free(w->slot[i].bits);
    free(w);
}

static void unlink_window_lru(Assembler *a, Window *w) {
    if (w->prev) w->prev->next = w->next; else a->whead = w->next;
    if (w->next) w->next->prev = w->prev; else a->wtail = w->prev;
}

static void append_window_lru(Assembler *a, Window *w) {
    w->next = NULL;
    w->prev = a->wtail;
    if (a->wtail) a->wtail->next = w; else a->whead = w;
    a->wtail = w;
}

static void forget_window(Assembler *a, Window *w) {
    Window **link = &a->buckets[window_bucket(w->stream_id)];
    while (*link != w) link = &(*link)->chain;
    *link = w->chain;
    unlink_window_lru(a, w);
    a->nwindows--;
    free_window(w);
}

/* The replay window of a stream id, created (forgetting the least recently heard beyond 1,024) or
 * made the most recent; NULL when out of memory. */
static Window *get_window(Assembler *a, uint32_t stream_id) {
    uint32_t b = window_bucket(stream_id);
    Window *w;
    for (w = a->buckets[b]; w; w = w->chain)
        if (w->stream_id == stream_id) break;
    if (w) {
        if (w != a->wtail) {
            unlink_window_lru(a, w);
            append_window_lru(a, w);
        }
        return w;
    }
    w = calloc(1, sizeof(Window));
    if (!w) return NULL;
    w->stream_id = stream_id;
    w->chain = a->buckets[b];
    a->buckets[b] = w;
    append_window_lru(a, w);
    a->nwindows++;
    while (a->nwindows > MAX_REPLAY_STREAMS) forget_window(a, a->whead);
    return w;
}

/* 1, and remembered, the first time (seq, index) is offered within the window; 0 when it is a replay
 * or too old; -1 when out of memory. As common.reassembly.ReplayWindow.accept. */
static int window_accept(Window *w, uint32_t seq, uint32_t index) {
    if (!w->has_newest || seq_newer(seq, w->newest)) {
        w->newest = seq;
        w->has_newest = 1;
        for (unsigned i = 0; i < REPLAY_WINDOW_FRAMES; i++)
            if (w->slot[i].used && (uint32_t)(seq - w->slot[i].seq) >= REPLAY_WINDOW_FRAMES) w->slot[i].used = 0;
    } else if ((uint32_t)(w->newest - seq) >= REPLAY_WINDOW_FRAMES) {
        return 0;
    }
    ReplaySlot *slot = &w->slot[seq % REPLAY_WINDOW_FRAMES];
    uint32_t word = index / 64;
    uint64_t bit = (uint64_t)1 << (index % 64);
    if (word >= slot->nwords) {
        uint64_t *bits = realloc(slot->bits, (size_t)(word + 1) * sizeof(uint64_t));
        if (!bits) return -1;
        memset(bits + slot->nwords, 0, (size_t)(word + 1 - slot->nwords) * sizeof(uint64_t));
        slot->bits = bits;
        slot->nwords = word + 1;
    }
    if (!slot->used) {
        slot->used = 1;
        slot->seq = seq;
        memset(slot->bits, 0, (size_t)slot->nwords * sizeof(uint64_t));
    }
    if (slot->bits[word] & bit) return 0;
    slot->bits[word] |= bit;
    return 1;
}

/* 1 when the last 16 bytes of d[0..n) are the truncated HMAC-SHA256 of the rest; -1 on a library error. */
static int mac_matches(Assembler *a, const uint8_t *d, size_t n) {
    unsigned char out[EVP_MAX_MD_SIZE];
    if (!mac_compute(a->mac, d, n - MAC_BYTES, out)) return -1;
    return CRYPTO_memcmp(out, d + n - MAC_BYTES, MAC_BYTES) == 0;
}

/* ----- one datagram ------------------------------------------------------------------------------ */

static Partial *new_partial(uint32_t seq, uint16_t count, uint32_t frame_len, uint64_t capture_ns, double now) {
    Partial *p = calloc(1, sizeof(Partial));
    if (!p) return NULL;
    p->offset = calloc(count, sizeof(uint32_t) + sizeof(uint16_t));
    if (!p->offset) {
        free(p);
        return NULL;
    }
    p->len = (uint16_t *)(p->offset + count);
    p->seq = seq;
    p->count = count;
    p->frame_len = frame_len;
    p->capture_ns = capture_ns;
    p->first_at = now;
    p->in_order = 1;
    return p;
}

/* The frame in index order: the buffer itself when the chunks came in order, else a new copy. */
static uint8_t *frame_bytes(Partial *p) {
    uint8_t *out;
    if (p->in_order) {
        out = p->buf;
        p->buf = NULL;
        return out;
    }
    out = malloc(p->frame_len ? p->frame_len : 1);
    if (!out) return NULL;
    for (uint32_t i = 0, at = 0; i < p->count; at += p->len[i], i++) memcpy(out + at, p->buf + p->offset[i], p->len[i]);
    return out;
}

/* Take one datagram from `src` at time `now`: 1 with *done filled when it completes a frame, else 0.
 * Every datagram it cannot use is counted under a reason, as FrameAssembler.add does. */
static int ingest(Assembler *a, const uint8_t *d, size_t n, const SrcKey *src, double now, Done *done) {
    uint64_t *c = a->counters;
    c[C_DATAGRAMS]++;
    c[C_BYTES] += n;
    if (n < HEADER_BYTES) return c[C_SHORT]++, 0;
    if (d[0] != 'F' || d[1] != 'H') return c[C_BAD_MAGIC]++, 0;
    if (d[2] != 1) return c[C_BAD_VERSION]++, 0;
    uint8_t flags = d[3];
    if (flags & ~FLAG_SIGNED) return c[C_BAD_FLAGS]++, 0;
    int is_signed = flags & FLAG_SIGNED;
    if (is_signed && n < HEADER_BYTES + MAC_BYTES) return c[C_SHORT]++, 0;
    size_t plen = n - HEADER_BYTES - (is_signed ? MAC_BYTES : 0);
    uint32_t stream_id = be32(d + 4), seq = be32(d + 8), frame_len = be32(d + 24);
    uint16_t index = be16(d + 12), count = be16(d + 14), payload_len = be16(d + 28);
    uint64_t capture_ns = be64(d + 16);
    const uint8_t *payload = d + HEADER_BYTES;
    if (payload_len != plen) return c[C_BAD_LENGTH]++, 0;
    if (count == 0 || index >= count) return c[C_BAD_CHUNK]++, 0;
    if (crc32_more(crc32_more(0, d, CRC_OFFSET), payload, plen) != be32(d + CRC_OFFSET)) return c[C_BAD_CHECKSUM]++, 0;
    if (!a->keyed) {
        if (is_signed) c[C_SIGNED_UNVERIFIED]++;
    } else if (!is_signed) {
        return c[C_DROPPED_UNSIGNED]++, 0;
    } else if (mac_matches(a, d, n) != 1) {
        return c[C_DROPPED_FORGED]++, 0;
    }
    if (frame_len == 0) return c[C_BAD_LENGTH]++, 0;
    if (frame_len > a->max_frame_bytes) return c[C_TOO_LARGE]++, 0;
    if (count > a->max_chunks || count > frame_len) return c[C_BAD_CHUNK]++, 0;
    if (payload_len == 0 || payload_len > frame_len) return c[C_BAD_LENGTH]++, 0;
    if (a->keyed) {
        Window *w = get_window(a, stream_id);
        int ok = w ? window_accept(w, seq, index) : -1;
        if (ok < 0) return c[C_NO_MEMORY]++, 0;
        if (!ok) return c[C_DROPPED_REPLAYED]++, 0;
    }
    Stream *s = get_stream(a, src, stream_id, now);
    if (!s) return c[C_NO_MEMORY]++, 0;
    if (is_late(s, seq)) return c[C_LATE]++, 0;

    Partial *p;
    for (p = s->head; p && p->seq != seq; p = p->next) {}
    if (!p) {
        while (s->npartials >= a->max_frames_in_flight) {
            drop_partial(a, s, s->head);
            c[C_FRAMES_INCOMPLETE]++;
        }
        p = new_partial(seq, count, frame_len, capture_ns, now);
        if (!p) return c[C_NO_MEMORY]++, 0;
        p->prev = s->tail;
        if (s->tail) s->tail->next = p; else s->head = p;
        s->tail = p;
        s->npartials++;
    } else if (p->count != count || p->frame_len != frame_len || p->capture_ns != capture_ns) {
        return c[C_INCONSISTENT]++, 0;
    } else if (p->len[index]) {
        return c[C_DUPLICATE]++, 0;
    }
    if ((uint64_t)p->size + plen > p->frame_len) return c[C_INCONSISTENT]++, 0;
    if (make_room(a, plen, p)) return 0; /* evicted to make room for itself */
    if (p->size + plen > p->cap) {
        uint64_t cap = p->cap ? (uint64_t)p->cap * 2 : FIRST_BUFFER_BYTES;
        if (cap < p->size + plen) cap = p->size + plen;
        if (cap > p->frame_len) cap = p->frame_len;
        uint8_t *buf = realloc(p->buf, cap);
        if (!buf) return c[C_NO_MEMORY]++, 0;
        p->buf = buf;
        p->cap = (uint32_t)cap;
    }
    memcpy(p->buf + p->size, payload, plen);
    p->offset[index] = p->size;
    p->len[index] = payload_len;
    if (index != p->received) p->in_order = 0;
    p->received++;
    p->size += (uint32_t)plen;
    a->buffered += plen;
    if (p->received < p->count) return 0;

    unlink_partial(a, s, p);
    if (p->size != p->frame_len) {
        free_partial(p);
        return c[C_CORRUPT]++, 0;
    }
    s->last_done = seq;
    s->has_done = 1;
    drop_older(a, s, seq);
    c[C_FRAMES_COMPLETE]++;
    done->data = frame_bytes(p);
    if (!done->data) {
        free_partial(p);
        return c[C_NO_MEMORY]++, 0;
    }
    done->len = p->frame_len;
    done->stream_id = stream_id;
    done->seq = seq;
    done->chunks = p->count;
    done->capture_ns = p->capture_ns;
    done->first_at = p->first_at;
    done->completed_at = now;
    done->src = *src;
    free_partial(p);
    return 1;
}

/* ----- source addresses -------------------------------------------------------------------------- */

static int key_from_sockaddr(const struct sockaddr_storage *ss, SrcKey *key) {
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        key->bytes[0] = AF_INET;
        memcpy(key->bytes + 1, &sin->sin_port, 2);
        memcpy(key->bytes + 3, &sin->sin_addr, 4);
        key->len = 7;
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        key->bytes[0] = AF_INET6;
        memcpy(key->bytes + 1, &sin6->sin6_port, 2);
        memcpy(key->bytes + 3, &sin6->sin6_addr, 16);
        key->len = 19;
        return 0;
    }
    key->bytes[0] = (uint8_t)ss->ss_family;
    key->len = 1;
    return 0;
}

/* (host, port) of a key, as socket.recvfrom gives it. */
static PyObject *source_tuple(const SrcKey *key) {
    char host[INET6_ADDRSTRLEN];
    uint16_t port;
    if (key->len < 7) return Py_BuildValue("(si)", "", 0);
    memcpy(&port, key->bytes + 1, 2);
    if (!inet_ntop(key->bytes[0], key->bytes + 3, host, sizeof(host))) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(si)", host, (int)ntohs(port));
}

/* The key of a (host, port) tuple naming an IPv4 or IPv6 address. */
static int key_from_source(PyObject *source, SrcKey *key) {
    const char *host;
    int port;
    if (!PyTuple_Check(source) || !PyArg_ParseTuple(source, "si", &host, &port)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "source must be a (host, port) tuple of an IP address");
        return -1;
    }
    uint16_t nport = htons((uint16_t)port);
    memcpy(key->bytes + 1, &nport, 2);
    if (inet_pton(AF_INET, host, key->bytes + 3) == 1) {
        key->bytes[0] = AF_INET;
        key->len = 7;
    } else if (inet_pton(AF_INET6, host, key->bytes + 3) == 1) {
        key->bytes[0] = AF_INET6;
        key->len = 19;
    } else {
        PyErr_Format(PyExc_ValueError, "source host %R is not an IP address", PyTuple_GET_ITEM(source, 0));
        return -1;
    }
    return 0;
}

static PyObject *make_frame(Assembler *a, Done *d, PyObject *source) {
    PyObject *data = PyBytes_FromStringAndSize((const char *)d->data, d->len);
    free(d->data);
    d->data = NULL;
    if (!data) return NULL;
    PyObject *frame = PyObject_CallFunction(a->frame_type, "OkkKNddk", source, (unsigned long)d->stream_id,
                                            (unsigned long)d->seq, (unsigned long long)d->capture_ns, data,
                                            d->first_at, d->completed_at, (unsigned long)d->chunks);
    return frame;
}

/* ----- the Assembler type ------------------------------------------------------------------------ */

static int clamp_u64(PyObject *v, const char *name, uint64_t max, uint64_t *out) {
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s must be a positive integer", name);
        return -1;
    }
    *out = x > max ? max : x;
    return 0;
}

static int Assembler_init(Assembler *a, PyObject *args, PyObject *kw) {
    static char *names[] = {"frame_type", "max_frame_bytes", "max_chunks", "max_frames_in_flight", "max_streams",
                            "max_buffered_bytes", "frame_timeout_s", "stream_idle_s", "key", NULL};
    PyObject *frame_type, *mfb, *mc, *mfif, *ms, *mbb;
    Py_buffer key = {0};
    if (a->lock) {
        PyErr_SetString(PyExc_RuntimeError, "Assembler.__init__ runs once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOdd|z*", names, &frame_type, &mfb, &mc, &mfif, &ms, &mbb,
                                     &a->frame_timeout_s, &a->stream_idle_s, &key))
        return -1;
    uint64_t mfif64, ms64, mc64;
    int bad = clamp_u64(mfb, "max_frame_bytes", UINT32_MAX, &a->max_frame_bytes) ||
              clamp_u64(mc, "max_chunks", UINT16_MAX, &mc64) ||
              clamp_u64(mfif, "max_frames_in_flight", LONG_MAX, &mfif64) ||
              clamp_u64(ms, "max_streams", LONG_MAX, &ms64) ||
              clamp_u64(mbb, "max_buffered_bytes", UINT64_MAX / 2, &a->max_buffered_bytes);
    if (!bad && (!mc64 || !mfif64 || !ms64 || !a->max_frame_bytes || !a->max_buffered_bytes)) {
        PyErr_SetString(PyExc_ValueError, "limits must be >= 1");
        bad = 1;
    }
    if (bad) {
        PyBuffer_Release(&key);
        return -1;
    }
    a->max_chunks = (uint32_t)mc64;
    a->max_frames_in_flight = (long)mfif64;
    a->max_streams = (long)ms64;
    if (key.buf) {
        a->mac = mac_new(key.buf, (size_t)key.len);
        PyBuffer_Release(&key);
        if (!a->mac) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up HMAC-SHA256");
            return -1;
        }
        a->keyed = 1;
    }
    a->lock = PyThread_allocate_lock();
    if (!a->lock) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(frame_type);
    a->frame_type = frame_type;
    return 0;
}

static void Assembler_dealloc(Assembler *a) {
    while (a->shead) {
        Stream *s = a->shead;
        while (s->head) drop_partial(a, s, s->head);
        unlink_stream(a, s);
        free(s);
    }
    while (a->whead) forget_window(a, a->whead);
    if (a->mac) mac_free(a->mac);
    if (a->lock) PyThread_free_lock(a->lock);
    Py_XDECREF(a->frame_type);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static int ready(Assembler *a) {
    if (!a->lock) PyErr_SetString(PyExc_RuntimeError, "Assembler.__init__ was not called");
    return a->lock != NULL;
}

static PyObject *Assembler_add(Assembler *a, PyObject *args) {
    Py_buffer view;
    PyObject *source;
    double now;
    SrcKey key;
    Done done;
    if (!ready(a) || !PyArg_ParseTuple(args, "y*Od:add", &view, &source, &now)) return NULL;
    if (key_from_source(source, &key) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    lock_assembler(a);
    int got = ingest(a, view.buf, (size_t)view.len, &key, now, &done);
    PyThread_release_lock(a->lock);
    PyBuffer_Release(&view);
    if (!got) Py_RETURN_NONE;
    return make_frame(a, &done, source);
}

static PyObject *Assembler_expire(Assembler *a, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (!ready(a) || (now == -1.0 && PyErr_Occurred())) return NULL;
    long dropped = 0;
    lock_assembler(a);
    Stream *s = a->shead;
    while (s) {
        Stream *next = s->next;
        Partial *p = s->head;
        while (p) {
            Partial *pn = p->next;
            if (now - p->first_at > a->frame_timeout_s) {
                drop_partial(a, s, p);
                dropped++;
            }
            p = pn;
        }
        if (!s->head && now - s->last_seen > a->stream_idle_s) {
            unlink_stream(a, s);
            free(s);
        }
        s = next;
    }
    a->counters[C_FRAMES_INCOMPLETE] += dropped;
    PyThread_release_lock(a->lock);
    return PyLong_FromLong(dropped);
}

/* ----- batched receive --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int slots, busy;
    size_t slot_bytes;
    uint8_t *mem;
    struct mmsghdr *msgs;
    struct iovec *iov;
    struct sockaddr_storage *addrs;
} RecvBatch;

static int RecvBatch_init(RecvBatch *b, PyObject *args, PyObject *kw) {
    static char *names[] = {"slots", "slot_bytes", NULL};
    int slots = 64;
    Py_ssize_t slot_bytes = 65536;
    if (b->mem) {
        PyErr_SetString(PyExc_RuntimeError, "RecvBatch.__init__ runs once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|in", names, &slots, &slot_bytes)) return -1;
    if (slots < 1 || slots > 1024 || slot_bytes < HEADER_BYTES || slot_bytes > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "slots must be 1..1024 and slot_bytes 34..1 MiB");
        return -1;
    }
    b->slots = slots;
    b->slot_bytes = (size_t)slot_bytes;
    b->mem = malloc((size_t)slots * b->slot_bytes);
    b->msgs = calloc((size_t)slots, sizeof(struct mmsghdr));
    b->iov = calloc((size_t)slots, sizeof(struct iovec));
    b->addrs = calloc((size_t)slots, sizeof(struct sockaddr_storage));
    if (!b->mem || !b->msgs || !b->iov || !b->addrs) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < slots; i++) {
        b->iov[i].iov_base = b->mem + (size_t)i * b->slot_bytes;
        b->iov[i].iov_len = b->slot_bytes;
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
        b->msgs[i].msg_hdr.msg_name = &b->addrs[i];
    }
    return 0;
}

static void RecvBatch_dealloc(RecvBatch *b) {
    free(b->mem);
    free(b->msgs);
    free(b->iov);
    free(b->addrs);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyTypeObject RecvBatchType;

typedef struct {
    Done *items;
    size_t n, cap;
} DoneList;

static int done_push(DoneList *l, const Done *d) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        Done *items = realloc(l->items, cap * sizeof(Done));
        if (!items) return -1;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = *d;
    return 0;
}

/* Read up to max_datagrams from a non-blocking socket in recvmmsg batches, without the GIL, until it
 * has no more; reassemble them. Returns (frames completed, datagrams read). */
static PyObject *Assembler_recv(Assembler *a, PyObject *args) {
    int fd, max_datagrams;
    RecvBatch *b;
    double now;
    if (!ready(a) || !PyArg_ParseTuple(args, "iO!di:recv", &fd, &RecvBatchType, &b, &now, &max_datagrams)) return NULL;
    if (!b->mem || b->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a RecvBatch serves one recv() at a time");
        return NULL;
    }
    b->busy = 1;
    DoneList done = {0};
    long got_total = 0;
    int no_memory = 0;
    lock_assembler(a);
    Py_BEGIN_ALLOW_THREADS
    int left = max_datagrams;
    while (left > 0) {
        int want = left < b->slots ? left : b->slots;
        for (int i = 0; i < want; i++) {
            b->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            b->msgs[i].msg_hdr.msg_flags = 0;
        }
        int got = recvmmsg(fd, b->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) a->counters[C_SOCKET_ERRORS]++;
            break;
        }
        for (int i = 0; i < got; i++) {
            SrcKey key;
            Done d;
            key_from_sockaddr(&b->addrs[i], &key);
            if (ingest(a, b->iov[i].iov_base, b->msgs[i].msg_len, &key, now, &d) && done_push(&done, &d) < 0) {
                free(d.data);
                no_memory++;
            }
        }
        got_total += got;
        left -= got;
        if (got < want) break;
    }
    a->counters[C_NO_MEMORY] += no_memory;
    Py_END_ALLOW_THREADS
    PyThread_release_lock(a->lock);
    b->busy = 0;

    PyObject *frames = PyList_New(0);
    for (size_t i = 0; i < done.n; i++) {
        PyObject *frame = NULL, *source = frames ? source_tuple(&done.items[i].src) : NULL;
        if (source) frame = make_frame(a, &done.items[i], source);
        Py_XDECREF(source);
        if (!frame || PyList_Append(frames, frame) < 0) Py_CLEAR(frames);
        Py_XDECREF(frame);
        free(done.items[i].data); /* NULL once make_frame took it */
    }
    free(done.items);
    if (!frames) return NULL;
    return Py_BuildValue("(Nl)", frames, got_total);
}

/* ----- read-outs --------------------------------------------------------------------------------- */

static PyObject *Assembler_counter_values(Assembler *a, PyObject *Py_UNUSED(ignored)) {
    uint64_t snap[C_COUNT];
    if (!ready(a)) return NULL;
    lock_assembler(a);
    memcpy(snap, a->counters, sizeof(snap));
    PyThread_release_lock(a->lock);
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < C_COUNT; i++) {
        if (!snap[i]) continue;
        PyObject *v = PyLong_FromUnsignedLongLong(snap[i]);
        if (!v || PyDict_SetItemString(out, COUNTER_NAMES[i], v) < 0) Py_CLEAR(out);
        Py_XDECREF(v);
    }
    return out;
}

static PyObject *Assembler_occupancy(Assembler *a, PyObject *Py_UNUSED(ignored)) {
    long streams = 0, partials = 0, most_partials = 0, windows = 0, most_entries = 0;
    uint64_t held = 0;
    if (!ready(a)) return NULL;
    lock_assembler(a);
    for (Stream *s = a->shead; s; s = s->next) {
        long n = 0;
        for (Partial *p = s->head; p; p = p->next, n++) held += p->size;
        streams++;
        partials += n;
        most_partials = n > most_partials ? n : most_partials;
    }
    for (Window *w = a->whead; w; w = w->next) {
        long n = 0;
        for (unsigned i = 0; i < REPLAY_WINDOW_FRAMES; i++) n += w->slot[i].used;
        windows++;
        most_entries = n > most_entries ? n : most_entries;
    }
    uint64_t buffered = a->buffered;
    PyThread_release_lock(a->lock);
    return Py_BuildValue("{s:l,s:l,s:l,s:K,s:K,s:l,s:l}", "streams", streams, "frames_in_flight", partials,
                         "most_frames_per_stream", most_partials, "buffered_bytes", (unsigned long long)buffered,
                         "held_bytes", (unsigned long long)held, "replay_windows", windows,
                         "most_replay_entries", most_entries);
}

static PyObject *Assembler_get_buffered(Assembler *a, void *Py_UNUSED(closure)) {
    if (!ready(a)) return NULL;
    lock_assembler(a);
    uint64_t v = a->buffered;
    PyThread_release_lock(a->lock);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *Assembler_get_in_flight(Assembler *a, void *Py_UNUSED(closure)) {
    long n = 0;
    if (!ready(a)) return NULL;
    lock_assembler(a);
    for (Stream *s = a->shead; s; s = s->next) n += s->npartials;
    PyThread_release_lock(a->lock);
    return PyLong_FromLong(n);
}

static PyMethodDef Assembler_methods[] = {
    {"add", (PyCFunction)Assembler_add, METH_VARARGS,
     "add(datagram, source, now) -> Frame | None: take one datagram from (host, port)."},
    {"recv", (PyCFunction)Assembler_recv, METH_VARARGS,
     "recv(fd, batch, now, max_datagrams) -> (frames, datagrams read): drain a non-blocking UDP socket."},
    {"expire", (PyCFunction)Assembler_expire, METH_O,
     "expire(now) -> int: drop timed-out incomplete frames and idle streams."},
    {"counter_values", (PyCFunction)Assembler_counter_values, METH_NOARGS, "The non-zero counters, by name."},
    {"occupancy", (PyCFunction)Assembler_occupancy, METH_NOARGS, "What is held now, counted by walking it."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Assembler_getset[] = {
    {"buffered_bytes", (getter)Assembler_get_buffered, NULL, "Chunk bytes held for incomplete frames.", NULL},
    {"frames_in_flight", (getter)Assembler_get_in_flight, NULL, "Incomplete frames held.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject AssemblerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "common._datagram.Assembler",
    .tp_doc = "Reassembles frame datagrams from any number of senders on one port (compiled twin of "
              "common.reassembly.FrameAssembler).",
    .tp_basicsize = sizeof(Assembler),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Assembler_init,
    .tp_dealloc = (destructor)Assembler_dealloc,
    .tp_methods = Assembler_methods,
    .tp_getset = Assembler_getset,
};

static PyTypeObject RecvBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "common._datagram.RecvBatch",
    .tp_doc = "RecvBatch(slots=64, slot_bytes=65536): the buffers one ingest thread's recvmmsg calls fill.",
    .tp_basicsize = sizeof(RecvBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RecvBatch_init,
    .tp_dealloc = (destructor)RecvBatch_dealloc,
};

/* ----- encoding (the publisher) ------------------------------------------------------------------ */

static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }

/* encode_frame(data, stream_id, seq, capture_ns, chunk_bytes, key=None) -> bytes: the frame's datagrams
 * back to back, each HEADER + chunk (+ MAC) bytes but the last, which may be shorter: what one segmented
 * send (UDP_SEGMENT with that size) puts on the wire as separate datagrams. Byte for byte what
 * common.protocol.encode_frame yields, joined. */
static PyObject *mod_encode_frame(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw) {
    static char *names[] = {"data", "stream_id", "seq", "capture_ns", "chunk_bytes", "key", NULL};
    Py_buffer data, key = {0};
    unsigned long long stream_id, seq;
    PyObject *capture_obj;
    Py_ssize_t chunk;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*KKOn|z*:encode_frame", names, &data, &stream_id, &seq,
                                     &capture_obj, &chunk, &key))
        return NULL;
    PyObject *out = NULL;
    MacCtx *mac = NULL;
    size_t mac_bytes = key.buf ? MAC_BYTES : 0;
    Py_ssize_t max_chunk = 65507 - HEADER_BYTES - (Py_ssize_t)mac_bytes;
    uint64_t capture_ns = PyLong_AsUnsignedLongLong(capture_obj);
    size_t len = (size_t)data.len, count = len ? (len + (size_t)chunk - 1) / (size_t)(chunk > 0 ? chunk : 1) : 1;
    if (capture_ns == (uint64_t)-1 && PyErr_Occurred()) goto done;
    if (chunk < 1 || chunk > max_chunk) {
        PyErr_Format(PyExc_ValueError, "chunk_bytes must be 1..%zd, got %zd", max_chunk, chunk);
        goto done;
    }
    if (count > 0xFFFF || len > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "frame of %zu bytes needs %zu chunks (max 65535)", len, count);
        goto done;
    }
    if (key.buf && !(mac = mac_new(key.buf, (size_t)key.len))) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up HMAC-SHA256");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * (HEADER_BYTES + mac_bytes) + len));
    if (!out) goto done;
    uint8_t *w = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *src = data.buf;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < count && !failed; i++) {
        size_t at = i * (size_t)chunk, n = len - at < (size_t)chunk ? len - at : (size_t)chunk;
        if (!len) n = 0;
        w[0] = 'F';
        w[1] = 'H';
        w[2] = 1;
        w[3] = key.buf ? FLAG_SIGNED : 0;
        put32(w + 4, (uint32_t)stream_id);
        put32(w + 8, (uint32_t)seq);
        put16(w + 12, (uint32_t)i);
        put16(w + 14, (uint32_t)count);
        put32(w + 16, (uint32_t)(capture_ns >> 32));
        put32(w + 20, (uint32_t)capture_ns);
        put32(w + 24, (uint32_t)len);
        put16(w + 28, (uint32_t)n);
        memcpy(w + HEADER_BYTES, src + at, n);
        put32(w + CRC_OFFSET, crc32_more(crc32_more(0, w, CRC_OFFSET), w + HEADER_BYTES, n));
        if (mac) {
            unsigned char digest[EVP_MAX_MD_SIZE];
            failed = !mac_compute(mac, w, HEADER_BYTES + n, digest);
            memcpy(w + HEADER_BYTES + n, digest, MAC_BYTES);
        }
        w += HEADER_BYTES + n + mac_bytes;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to compute an HMAC");
    }
done:
    if (mac) mac_free(mac);
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return out;
}

/* ----- module functions -------------------------------------------------------------------------- */

/* Spread a SO_REUSEPORT group's datagrams over its sockets by the header's stream id (bytes 4-7 of the
 * UDP payload), not by the 4-tuple: every datagram of a stream id reaches one socket whatever source
 * address it claims, so each socket's replay windows see all of their streams. */
static PyObject *mod_steer_by_stream_id(PyObject *Py_UNUSED(m), PyObject *args) {
    int fd;
    unsigned int sockets;
    if (!PyArg_ParseTuple(args, "iI:steer_by_stream_id", &fd, &sockets)) return NULL;
    if (sockets < 1) {
        PyErr_SetString(PyExc_ValueError, "sockets must be >= 1");
        return NULL;
    }
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4),        /* A = stream id (the payload starts at 0 here) */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, sockets), /* A %= sockets */
        BPF_STMT(BPF_RET | BPF_A, 0),                 /* the socket's index in the group */
    };
    struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"encode_frame", (PyCFunction)(void (*)(void))mod_encode_frame, METH_VARARGS | METH_KEYWORDS,
     "encode_frame(data, stream_id, seq, capture_ns, chunk_bytes, key=None) -> bytes: every datagram of a "
     "frame, back to back (as common.protocol.encode_frame yields them)."},
    {"steer_by_stream_id", mod_steer_by_stream_id, METH_VARARGS,
     "steer_by_stream_id(fd, sockets): route a SO_REUSEPORT group's datagrams by stream id."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "common._datagram",
    "Compiled frame datagrams: segmented encoding, recvmmsg batches and reassembly (twin of common.protocol "
    "and common.reassembly).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__datagram(void) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    if (!hmac_algorithm) hmac_algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL);
#endif
    if (PyType_Ready(&AssemblerType) < 0 || PyType_Ready(&RecvBatchType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *names = PyTuple_New(C_COUNT);
    for (int i = 0; names && i < C_COUNT; i++) PyTuple_SET_ITEM(names, i, PyUnicode_FromString(COUNTER_NAMES[i]));
    if (!names || PyModule_AddObject(m, "COUNTER_NAMES", names) < 0 ||
        PyModule_AddObjectRef(m, "Assembler", (PyObject *)&AssemblerType) < 0 ||
        PyModule_AddObjectRef(m, "RecvBatch", (PyObject *)&RecvBatchType) < 0 ||
        PyModule_AddIntConstant(m, "REPLAY_WINDOW_FRAMES", REPLAY_WINDOW_FRAMES) < 0 ||
        PyModule_AddIntConstant(m, "MAX_REPLAY_STREAMS", MAX_REPLAY_STREAMS) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
