/* A slow card for the spool: loaded with LD_PRELOAD, it makes every fdatasync and fsync of
 * the process wait SLOW_FSYNC_MS milliseconds (default 400) before doing it, as an SD card
 * under load can, and says so on standard error ("slow card: fsync"). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void wait_as_a_slow_card(void)
{
    const char *ms = getenv("SLOW_FSYNC_MS");
    long n = ms ? atol(ms) : 400;
    struct timespec t = { n / 1000, (n % 1000) * 1000000L };
    nanosleep(&t, NULL);
    static const char said[] = "slow card: fsync\n";
    ssize_t written = write(2, said, sizeof said - 1);
    (void) written;
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int)) dlsym(RTLD_NEXT, "fdatasync");
    wait_as_a_slow_card();
    return real(fd);
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int)) dlsym(RTLD_NEXT, "fsync");
    wait_as_a_slow_card();
    return real(fd);
}
