/* SPDX-License-Identifier: Apache-2.0 */
#include "process_metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "proc/proc.h"

/* /proc/stat's btime: the boot time in seconds since the epoch, 0 if unknown. */
static unsigned long long boot_time(void) {
        _cleanup_free_ char *data = NULL;
        if (read_full_file("/proc/stat", 1024 * 1024, &data, NULL, NULL) < 0)
                return 0;
        const char *line = strstr(data, "\nbtime ");
        unsigned long long btime = 0;
        return line && sscanf(line + 7, "%llu", &btime) == 1 ? btime : 0;
}

static long open_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -1;
        long n = 0;
        for (struct dirent *de; (de = readdir(d));)
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1; /* the directory's own descriptor */
}

void process_metrics_collect(vt_metrics *m, const char *version) {
        _cleanup_free_ char *l = xasprintf("version=\"%s\"", version);
        vt_gauge_set(m, "vtpm_agent_build_info", "1, labelled with the agent's version.", l, 1);

        /* utime, stime (ticks), starttime (ticks after boot), vsize (bytes), rss (pages) */
        uint64_t f[5];
        double tick = (double)sysconf(_SC_CLK_TCK);
        if (tick > 0 && proc_stat_numbers(getpid(), (const unsigned[]){14, 15, 22, 23, 24}, 5, f, NULL) >= 0) {
                vt_counter_set(m, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                               NULL, (double)(f[0] + f[1]) / tick);
                unsigned long long btime = boot_time();
                if (btime)
                        vt_gauge_set(m, "process_start_time_seconds",
                                     "Start time of the process since unix epoch in seconds.", NULL,
                                     /* whole seconds: printed exactly (fractions get 9 digits) */
                                     (double)(btime + (unsigned long long)((double)f[2] / tick)));
                vt_gauge_set(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL, (double)f[3]);
                vt_gauge_set(m, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL,
                             (double)f[4] * (double)sysconf(_SC_PAGESIZE));
        }
        long fds = open_fds();
        if (fds >= 0)
                vt_gauge_set(m, "process_open_fds", "Number of open file descriptors.", NULL, (double)fds);
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
                vt_gauge_set(m, "process_max_fds", "Maximum number of open file descriptors.", NULL,
                             (double)rl.rlim_cur);
}
