/* clawlink_transport.h: the C ABI (version 1) of clawlink transport plugins loaded at run time.
 *
 * A transport plugin is a shared library (.so on Linux, .dylib on macOS) that exports ONE
 * symbol, `clawlink_transport_plugin_v1`, a function returning a pointer to a static table
 * that describes the transport and how to connect it. clawlink loads the library when a
 * profile or a listing needs it, registers the transport under the table's `name`, and from
 * then on uses it like a built-in one (`transport = "<name>"` in a profile).
 *
 * The whole contract is in this file and docs/transport-plugins.md. In short:
 * - Plain C: no Rust, C++ or runtime types cross the boundary; any compiler works.
 * - `connect` returns a CONNECTED STREAM FILE DESCRIPTOR: a TCP socket, a Unix socket, or one
 *   end of a socketpair(2) whose other end the plugin pumps on threads of its own. Ownership
 *   of the fd passes to clawlink on success (clawlink closes it).
 * - Every string the plugin hands out (the table's) is static: valid, unchanged and owned by
 *   the plugin for the life of the process. Libraries are never unloaded.
 * - Everything clawlink hands in (settings JSON, the error buffer) is owned by clawlink and
 *   valid only during the call. Nothing is ever freed across the boundary.
 * - Errors are written by the plugin INTO clawlink's buffer (UTF-8, truncated to its capacity).
 * - `connect` runs on a blocking thread of clawlink's, under a time limit; several calls may
 *   run at once, from different threads.
 */
#ifndef CLAWLINK_TRANSPORT_H
#define CLAWLINK_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes; `abi_version` in the table. */
#define CLAWLINK_TRANSPORT_ABI_VERSION 1u

/* The name of the one symbol a plugin exports (its type: clawlink_transport_plugin_v1_fn). */
#define CLAWLINK_TRANSPORT_ENTRY_SYMBOL "clawlink_transport_plugin_v1"

/* What `connect` and `check_settings` return. Anything else is read as CLAWLINK_ERR_CONNECT. */
#define CLAWLINK_OK 0
/* The settings are wrong (missing key, bad value): retrying will not help. */
#define CLAWLINK_ERR_CONFIG 1
/* Could not reach the gateway or a hop on the way (refused, unreachable, proxy down):
 * clawlink retries later with backoff. */
#define CLAWLINK_ERR_CONNECT 2
/* A hop refused our credentials (proxy authentication): retrying will not help. */
#define CLAWLINK_ERR_AUTH 3

/* Writes a one-line, UTF-8 explanation of a failure into clawlink's buffer.
 * Contract for the plugin: write at most `err_cap` bytes into `err_buf` (no NUL needed) and
 * store the number of bytes written in `*err_len`. Never write a secret (a password, a
 * token) into it: clawlink prints it. A good message names the cause and the fix, e.g.
 * "SOCKS5 proxy 127.0.0.1:1080 refused the connection: is `ssh -D 1080` running?". */

/* The table. Every field up to `connect` is required; the optional functions may be NULL.
 * New fields are only ever appended; `struct_size` tells clawlink which ones exist. */
typedef struct clawlink_transport_v1 {
    /* CLAWLINK_TRANSPORT_ABI_VERSION. */
    uint32_t abi_version;
    /* sizeof(clawlink_transport_v1) as the plugin was compiled. */
    uint32_t struct_size;
    /* The name profiles use: 1-32 bytes of [a-z0-9-], starting with a letter, unique among
     * every transport clawlink has (built-in and loaded). NUL-terminated, static. */
    const char *name;
    /* The plugin's own version, e.g. "1.2.0". NUL-terminated, static. */
    const char *version;
    /* One line for `clawlink transports`. NUL-terminated UTF-8, static. */
    const char *summary;
    /* A TOML snippet of the settings table (`[PROFILE.transports.<name>]`), shown by
     * `clawlink transports`. NUL-terminated UTF-8, static; may be "". */
    const char *example_config;

    /* Opens a stream to the gateway's WebSocket port.
     * settings_json / settings_len: the profile's `transports.<name>` table as a JSON object,
     *   UTF-8, NOT NUL-terminated, valid during the call only.
     * out_fd: on CLAWLINK_OK, a connected stream socket (blocking or not: clawlink sets what
     *   it needs); ownership passes to clawlink. Untouched or ignored otherwise.
     * err_buf / err_cap / err_len: see above; used when the result is not CLAWLINK_OK.
     * Runs on a blocking thread; must return within the time limit clawlink applies (a late
     * fd is closed by clawlink when the call finally returns). Must not call exit/abort. */
    int32_t (*connect)(const uint8_t *settings_json, size_t settings_len, int32_t *out_fd,
                       uint8_t *err_buf, size_t err_cap, size_t *err_len);

    /* Optional (may be NULL): checks the settings without any network, for `clawlink config
     * check` and before the first connect. CLAWLINK_OK or CLAWLINK_ERR_CONFIG with a message. */
    int32_t (*check_settings)(const uint8_t *settings_json, size_t settings_len,
                              uint8_t *err_buf, size_t err_cap, size_t *err_len);

    /* Optional (may be NULL): where these settings connect, in one line without secrets
     * ("socks5 127.0.0.1:1080 → gw.example.com:18789"), for status lines. Writes like an
     * error message; returns CLAWLINK_OK, or anything else to let clawlink describe it. */
    int32_t (*describe)(const uint8_t *settings_json, size_t settings_len, uint8_t *out_buf,
                        size_t out_cap, size_t *out_len);

    /* ---- Ports on the gateway host (appended to version 1; read only when `struct_size`
     * covers them, so plugins built against an older header keep loading). Offer BOTH or
     * neither: with both, `clawlink tunnel`, the forwards of `clawlink up` and `clawlink
     * dashboard` work through the plugin, one fresh connection per local client. */

    /* Optional (may be NULL): the gateway's port on its host for these settings (the port
     * `connect` reaches); the Control UI's widget sandbox is the port after it. Returns 0
     * when the settings do not say, which clawlink reports as a settings error. Offline:
     * no network, returns at once. */
    uint16_t (*gateway_port)(const uint8_t *settings_json, size_t settings_len);

    /* Optional (may be NULL): like `connect`, but to `port` on the gateway host's loopback
     * interface (clawlink asks for gateway_port() and the port after it). Same ownership,
     * threading, time limit and error rules as `connect`. A plugin that cannot reach that
     * port returns CLAWLINK_ERR_CONNECT with a message naming the port. */
    int32_t (*connect_port)(const uint8_t *settings_json, size_t settings_len, uint16_t port,
                            int32_t *out_fd, uint8_t *err_buf, size_t err_cap, size_t *err_len);
} clawlink_transport_v1;

/* The one exported function. Returns the plugin's static table (never NULL). Called once,
 * right after the library is loaded. */
typedef const clawlink_transport_v1 *(*clawlink_transport_plugin_v1_fn)(void);

const clawlink_transport_v1 *clawlink_transport_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* CLAWLINK_TRANSPORT_H */
