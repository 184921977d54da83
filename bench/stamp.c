/* Benchmark probe: appends "<tag> <scheduled> <now_ns>\n" to a file, where <tag>
 * is argv[2] and <scheduled> is $STEWARD_SCHEDULED_FOR (or "-"). One write(2)
 * with O_APPEND, so concurrent probes never interleave within a line. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 3) return 2;
    const char *sched = getenv("STEWARD_SCHEDULED_FOR");
    char line[256];
    int n = snprintf(line, sizeof line, "%s %s %lld\n", argv[2], sched ? sched : "-",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return 1;
    write(fd, line, (size_t)n);
    close(fd);
    return 0;
}
