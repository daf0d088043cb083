/* ctcp.c: a transport plugin written in C, as a third party would, against
 * include/clawlink_transport.h only. It connects to 127.0.0.1:<port> (the settings' "port")
 * and hands clawlink the TCP socket. The tests compile it with cc, and compile variants of
 * it with -D switches to produce each kind of broken plugin clawlink must refuse:
 *   -DPLUGIN_NAME='"x"'  another transport name     -DABI=2        an unknown ABI version
 *   -DSTRUCT_SIZE=16     a table too small           -DNO_ENTRY     no entry symbol
 *   -DHANG               connect never returns       -DBAD_FD       connect returns a pipe
 */
#include <clawlink_transport.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "ctcp"
#endif
#ifndef ABI
#define ABI CLAWLINK_TRANSPORT_ABI_VERSION
#endif
#ifndef STRUCT_SIZE
#define STRUCT_SIZE sizeof(clawlink_transport_v1)
#endif

/* Copies a message into clawlink's buffer, truncated to its capacity (ASCII only here). */
static size_t put(uint8_t *buf, size_t cap, const char *msg) {
    size_t n = strlen(msg);
    if (n > cap) n = cap;
    memcpy(buf, msg, n);
    return n;
}

/* The number after "port": in a flat JSON object, or -1. Enough JSON for a test plugin. */
static long find_port(const uint8_t *json, size_t len) {
    char text[4096];
    if (len >= sizeof text) return -1;
    memcpy(text, json, len);
    text[len] = 0;
    const char *key = strstr(text, "\"port\"");
    if (!key) return -1;
    const char *colon = strchr(key, ':');
    if (!colon) return -1;
    return strtol(colon + 1, NULL, 10);
}

static int32_t check_settings(const uint8_t *json, size_t len, uint8_t *err, size_t cap,
                              size_t *err_len) {
    long port = find_port(json, len);
    if (port <= 0 || port > 65535) {
        *err_len = put(err, cap, "settings need \"port\": the gateway's TCP port on 127.0.0.1");
        return CLAWLINK_ERR_CONFIG;
    }
    return CLAWLINK_OK;
}

static int32_t connect_gateway(const uint8_t *json, size_t len, int32_t *out_fd, uint8_t *err,
                               size_t cap, size_t *err_len) {
#ifdef HANG
    sleep(60);
#endif
#ifdef BAD_FD
    int ends[2];
    if (pipe(ends) == 0) {
        close(ends[1]);
        *out_fd = ends[0];
        return CLAWLINK_OK;
    }
#endif
    if (check_settings(json, len, err, cap, err_len) != CLAWLINK_OK) return CLAWLINK_ERR_CONFIG;
    long port = find_port(json, len);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err_len = put(err, cap, "socket() failed");
        return CLAWLINK_ERR_CONNECT;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "nothing accepts connections on 127.0.0.1:%ld", port);
        close(fd);
        *err_len = put(err, cap, msg);
        return CLAWLINK_ERR_CONNECT;
    }
    *out_fd = fd;
    return CLAWLINK_OK;
}

static int32_t describe(const uint8_t *json, size_t len, uint8_t *out, size_t cap,
                        size_t *out_len) {
    char msg[64];
    snprintf(msg, sizeof msg, "ctcp 127.0.0.1:%ld", find_port(json, len));
    *out_len = put(out, cap, msg);
    return CLAWLINK_OK;
}

static const clawlink_transport_v1 TABLE = {
    ABI,
    STRUCT_SIZE,
    PLUGIN_NAME,
    "0.3.0",
    "a TCP connection to 127.0.0.1:<port> (the tests' plugin in C)",
    "port = 18789   # the gateway's port on this machine",
    connect_gateway,
    check_settings,
    describe,
};

#ifndef NO_ENTRY
const clawlink_transport_v1 *clawlink_transport_plugin_v1(void) { return &TABLE; }
#else
const clawlink_transport_v1 *not_the_entry_symbol(void) { return &TABLE; }
#endif
