/*
 * An LD_PRELOAD shim for redis-server that makes its disk slow and tells what it made durable.
 *
 * Compiled with the system's gcc when a test or bench first asks for it
 * (readscale.stack.slowdisk); only ever loaded into a server the stack started.
 *
 *   READSCALE_FSYNC_CONTROL  a file holding the delay in milliseconds added to every fsync()
 *                            and fdatasync() (read again at each call, so a test can change
 *                            it while Redis runs; missing or empty: no delay).
 *   READSCALE_FSYNC_LOG      a file each completed fsync appends one line to:
 *                            "<size> <path>", the file's size when the fsync began, i.e.
 *                            the bytes that fsync made durable. A test emulates a host crash
 *                            (power loss) by cutting each AOF file back to its last logged
 *                            size after killing Redis; the line count is the fsync count.
 *
 * The delay is taken before the real call, as a slow disk would, so Redis's own logic
 * (appendfsync everysec postponing its write while a background fsync runs) meets it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static long delay_ms(void) {
    const char *path = getenv("READSCALE_FSYNC_CONTROL");
    if (!path) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void record(int fd, long long size) {
    const char *log = getenv("READSCALE_FSYNC_LOG");
    if (!log || size < 0) return;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = 0;
    char line[PATH_MAX + 32];
    int len = snprintf(line, sizeof line, "%lld %s\n", size, target);
    int out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0) return;
    ssize_t ignored = write(out, line, (size_t)len); /* O_APPEND: one line, one write, whole */
    (void)ignored;
    close(out);
}

static int slow_sync(const char *name, int fd) {
    int saved = errno;
    sync_fn real = (sync_fn)dlsym(RTLD_NEXT, name);
    struct stat st;
    long long size = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
    long ms = delay_ms();
    if (ms > 0) pause_ms(ms);
    errno = saved;
    int rc = real(fd);
    if (rc == 0) {
        saved = errno;
        record(fd, size);
        errno = saved;
    }
    return rc;
}

int fsync(int fd) { return slow_sync("fsync", fd); }
int fdatasync(int fd) { return slow_sync("fdatasync", fd); }
