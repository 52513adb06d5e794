/* A slow card for the spool: loaded with LD_PRELOAD, it makes every fdatasync and fsync of
 * the process wait SLOW_FSYNC_MS milliseconds (default 400) before doing it, as an SD card
 * under load can, and says so on standard error ("slow card: fsync"). With SLOW_PWRITE_MS
 * set, every pwrite (how the spool writes its records) waits that long too ("slow card:
 * pwrite"); with SLOW_PREAD_MS, every pread (how it reads fragments back: "slow card:
 * pread"). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void wait_as_a_slow_card(const char *variable, long fallback, const char *said)
{
    const char *ms = getenv(variable);
    long n = ms ? atol(ms) : fallback;
    struct timespec t = { n / 1000, (n % 1000) * 1000000L };
    nanosleep(&t, NULL);
    size_t len = 0;
    while (said[len])
        len++;
    ssize_t written = write(2, said, len);
    (void) written;
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int)) dlsym(RTLD_NEXT, "fdatasync");
    wait_as_a_slow_card("SLOW_FSYNC_MS", 400, "slow card: fsync\n");
    return real(fd);
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int)) dlsym(RTLD_NEXT, "fsync");
    wait_as_a_slow_card("SLOW_FSYNC_MS", 400, "slow card: fsync\n");
    return real(fd);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
    static ssize_t (*real)(int, const void *, size_t, off64_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t, off64_t)) dlsym(RTLD_NEXT, "pwrite64");
    if (getenv("SLOW_PWRITE_MS"))
        wait_as_a_slow_card("SLOW_PWRITE_MS", 0, "slow card: pwrite\n");
    return real(fd, buf, count, offset);
}

ssize_t pread64(int fd, void *buf, size_t count, off64_t offset)
{
    static ssize_t (*real)(int, void *, size_t, off64_t);
    if (!real)
        real = (ssize_t (*)(int, void *, size_t, off64_t)) dlsym(RTLD_NEXT, "pread64");
    if (getenv("SLOW_PREAD_MS"))
        wait_as_a_slow_card("SLOW_PREAD_MS", 0, "slow card: pread\n");
    return real(fd, buf, count, offset);
}
