/*
 * encoding.h: gzip content coding for the cache: which codings a client accepts (RFC 9110
 * §12.5.3), which responses are worth compressing, a streaming gzip compressor for the store sink,
 * a bounded pull-style gunzip for serving a stored gzip body to a client that does not accept it,
 * a validator for gzip bodies from the origin, and the ETag of a transformed representation.
 *
 * Negotiation and the compress decision are pure: no clock, no I/O, no global state; any thread.
 * The compressor and decompressor are handles used by one thread at a time (they may move between
 * threads between calls). zlib's memory comes from cdn_calloc, so allocation failure aborts and
 * no function here reports it.
 *
 * Left to the caller: "Vary: Accept-Encoding" on every response of a resource served in both
 * codings, compressed or not; and a request's Cache-Control no-transform (RFC 9111 §5.2.1.6),
 * which asks not to receive a body this cache compressed (a gzip body the origin sent may still
 * be served as is).
 */
#ifndef CDNODE_ENCODING_H
#define CDNODE_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct cdn_hdrs;
struct cdn_arena;

/* ---- Negotiation (RFC 9110 §12.5.3) ---------------------------------------------------------- */

/*
 * Whether gzip may be sent to the client of request `req`, from all its Accept-Encoding lines:
 *  - "gzip" or "x-gzip" (same coding, RFC 9110 §8.4.1.3) listed with q > 0, or
 *  - "*" with q > 0 while neither gzip nor x-gzip is listed.
 * Codings are case-insensitive; OWS is allowed around ';' but not around '='. A weight must be
 * exactly "q=" qvalue (0, 0.x to 0.xxx, 1, 1. to 1.000; "Q" too); a member with any other
 * parameter or an invalid weight is ignored as if absent. When listings of one coding disagree
 * (e.g. "gzip, x-gzip;q=0" or "*, *;q=0") the one that keeps identity wins: gzip is refused.
 * Preference between acceptable codings is not honoured ("gzip;q=0.1, identity" still gives true:
 * the smaller body is served, as common servers do).
 *
 * No Accept-Encoding at all gives false. RFC 9110 reads that as "any coding is acceptable", but
 * old clients and tools that send nothing often cannot decode gzip, so identity is served then.
 * An empty field ("Accept-Encoding:") asks for identity only: false.
 */
bool cdn_accepts_gzip(const struct cdn_hdrs *req);

/*
 * Whether the identity coding is acceptable to the client of `req`: false only for
 * "identity;q=0", or "*;q=0" without an "identity" member with q > 0. Same parsing as
 * cdn_accepts_gzip; disagreeing listings resolve towards identity (acceptable). No field: true.
 * A caller with a resource it can serve only as gzip or identity answers 406 when both this and
 * cdn_accepts_gzip() are false; real clients practically never send such a field.
 */
bool cdn_identity_acceptable(const struct cdn_hdrs *req);

/* ---- The compress decision ------------------------------------------------------------------- */

/* The content coding of a response, from its Content-Encoding lines. */
enum cdn_coding {
    /* no Content-Encoding, or only "identity" members */
    CDN_CODING_IDENTITY,
    /* exactly one coding, "gzip" or "x-gzip" (any case) */
    CDN_CODING_GZIP,
    /* anything else: other codings, several codings, a field without members */
    CDN_CODING_OTHER
};
enum cdn_coding cdn_content_coding(const struct cdn_hdrs *resp);

/*
 * Media types worth compressing, for the configuration's default: textual formats and a few
 * uncompressed binary ones (TrueType/OpenType fonts, ICO, BMP). Formats that are compressed
 * already (PNG, JPEG, WOFF, archives) and wasm are left out. Entries are lowercase
 * "type/subtype", or a type with the subtype "*", which stands for every subtype of that type.
 * Static; any thread.
 */
extern const char *const cdn_gzip_default_types[];
extern const size_t cdn_gzip_default_ntypes;

/*
 * Whether a response should be stored gzip-compressed: status 200; content coding identity
 * (cdn_content_coding); no "no-transform" in Cache-Control (RFC 9111 §5.2.2.6); exactly one
 * Content-Type line whose media type (the part before ';', OWS trimmed, a valid "token/token")
 * equals an entry of types[0..ntypes) or, for an entry with subtype "*", has that entry's type
 * (all comparisons case-insensitive); and content_length unknown (-1) or >= min_size.
 */
bool cdn_should_compress(int status, const struct cdn_hdrs *resp, int64_t content_length,
                         size_t min_size, const char *const *types, size_t ntypes);

/* ---- Streaming gzip compressor --------------------------------------------------------------- */

/* Output pieces are handed out when this many compressed bytes have accumulated (and at finish). */
#define CDN_GZ_PIECE (32 * 1024)

struct cdn_gz;

/* Receives compressed bytes p[0..n), n > 0; p is valid only during the call. */
typedef void (*cdn_gz_emit_fn)(void *arg, const void *p, size_t n);

/*
 * A compressor producing one gzip member (RFC 1952, zlib's header: no name, mtime 0) at `level`
 * (0..9, or -1 for zlib's default, 6); any other level is a programming error and aborts. Never
 * NULL. It holds about 300 KiB (zlib's deflate state plus one CDN_GZ_PIECE buffer) whatever the
 * data size. Free with cdn_gz_free().
 */
struct cdn_gz *cdn_gz_new(int level);

/*
 * Compresses in[0..n) (n may be 0). Whenever the internal buffer fills, emit(arg, ...) is called
 * with exactly CDN_GZ_PIECE bytes, so pieces arrive in order and only full pieces arrive before
 * cdn_gz_finish(). Returns 0, or CDN_EIO if zlib reports an inconsistent stream (the compressor
 * is then unusable: free it). Calling it after cdn_gz_finish() is a programming error (aborts).
 */
int cdn_gz_write(struct cdn_gz *z, const void *in, size_t n, cdn_gz_emit_fn emit, void *arg);

/*
 * Ends the member: emits the remaining compressed bytes and the gzip trailer (the last piece may
 * be shorter than CDN_GZ_PIECE; there is always at least one piece overall, since even empty
 * input compresses to about 20 bytes). Returns 0 or CDN_EIO. Call once.
 */
int cdn_gz_finish(struct cdn_gz *z, cdn_gz_emit_fn emit, void *arg);

/* Uncompressed and compressed byte counts so far (for metrics and stored lengths). */
uint64_t cdn_gz_total_in(const struct cdn_gz *z);
uint64_t cdn_gz_total_out(const struct cdn_gz *z);

/* Releases the compressor (finished or not). NULL is fine. */
void cdn_gz_free(struct cdn_gz *z);

/* ---- Bounded streaming gunzip ---------------------------------------------------------------- */

struct cdn_gunzip;

/*
 * A decompressor reading gzip data from the segments in[0..niov) in order (empty segments are
 * fine). The segments' bytes are not copied and must stay valid and unchanged until
 * cdn_gunzip_free() (e.g. they point into a store lease held that long); the iovec array itself
 * is copied and may go away after this call. The data may be a sequence of gzip members (RFC 1952
 * §2.2): the output is their concatenation, as gzip(1) decodes it; bytes after a member that do
 * not form another valid member are corruption, not ignored. At most max_out bytes of output are
 * allowed in total (the guard against decompression bombs). Memory: zlib's inflate state (about
 * 40 KiB) and the iovec array, nothing proportional to the data. Never NULL.
 */
struct cdn_gunzip *cdn_gunzip_new(const struct iovec *in, unsigned niov, uint64_t max_out);

/*
 * Produces up to max (> 0) decompressed bytes into out, filling it unless the data ends first.
 * Returns the number of bytes produced (> 0), 0 once the data has ended after a complete member,
 * or a negative code:
 *  CDN_ECORRUPT  not gzip, bad header, bad deflate data, CRC or length mismatch, trailing bytes
 *                that are not a member, or the data ends inside a member (truncated, or empty);
 *  CDN_ETOOBIG   the output would exceed max_out (at most one byte past max_out is ever
 *                decompressed, into out).
 * Errors are sticky: every later call returns the same code. Bytes decompressed by the call that
 * fails are not reported (out holds unspecified data then).
 */
ssize_t cdn_gunzip_read(struct cdn_gunzip *g, char *out, size_t max);

/* Releases the decompressor. NULL is fine. */
void cdn_gunzip_free(struct cdn_gunzip *g);

/*
 * Checks that in[0..niov) is gzip data cdn_gunzip_read() would decode completely within max_out
 * bytes, by decompressing it into a scratch buffer on the stack (nothing is kept). Returns 0 with
 * the decompressed length in *out_len, or CDN_ECORRUPT / CDN_ETOOBIG as cdn_gunzip_read() would
 * (*out_len untouched). Costs a full decompression: use it once, before storing.
 */
int cdn_gzip_check(const struct iovec *in, unsigned niov, uint64_t max_out, uint64_t *out_len);

/* ---- ETag of a transformed representation ---------------------------------------------------- */

/*
 * The ETag to send with a representation this cache transformed (compressed or decompressed),
 * given the origin's ETag value etag[0..len): a strong entity-tag gets the "W/" prefix (the bytes
 * differ, so it can no longer be strong, RFC 9110 §8.8.1); a weak one is returned unchanged.
 * The result is a NUL-terminated copy in arena a. Returns NULL when etag is not exactly one valid
 * entity-tag (RFC 9110 §8.8.3); the caller then drops the field.
 */
const char *cdn_etag_weaken(const char *etag, size_t len, struct cdn_arena *a);

#endif
