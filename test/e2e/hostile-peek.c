/* SPDX-License-Identifier: Apache-2.0 */
/* Suite 59's hostile helper (a tenant can ship any binary in its launcher):
 * can this process read another process's memory (another VM's swtpm, where
 * its key is)? PTRACE_SEIZE + PTRACE_INTERRUPT, its stack pointer, then
 * process_vm_readv of 256 bytes there; detaches again. Needs no /proc.
 * Prints "victim_ptrace: yes|no (error)" and "victim_mem_read_bytes: N". */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
        if (argc != 2)
                return 2;
        pid_t pid = (pid_t)atoi(argv[1]);
        if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) {
                printf("victim_ptrace: no (%s)\nvictim_mem_read_bytes: 0\n", strerror(errno));
                return 0;
        }
        printf("victim_ptrace: yes\n");
        long n = 0;
        struct user_regs_struct regs;
        int st;
        if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0 && waitpid(pid, &st, __WALL) == pid &&
            ptrace(PTRACE_GETREGS, pid, 0, &regs) == 0) {
                char buf[256];
                struct iovec l = {buf, sizeof(buf)}, r = {(void *)regs.rsp, sizeof(buf)};
                n = process_vm_readv(pid, &l, 1, &r, 1, 0);
        }
        ptrace(PTRACE_DETACH, pid, 0, 0);
        printf("victim_mem_read_bytes: %ld\n", n < 0 ? 0 : n);
        return 0;
}
