/* SPDX-License-Identifier: Apache-2.0 */
/* Real bind mounts into real mount namespaces (needs root).
 *
 * The test process first moves into a private mount namespace of its own: it
 * plays the agent's ("host") namespace, and whatever a failed run leaves
 * mounted dies with it instead of leaking onto the machine. A forked child
 * plays the virt-launcher: its own mount namespace (private, a tmpfs over
 * /var/lib standing for its container filesystem), listening on a unix
 * socket. A tmpfs mounted at a temp dir in the "host" namespace is the
 * published volume. */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "mount/mountinfo.h"
#include "mount/mountpoint.h"
#include "mount/nsmount.h"
#include "proc/proc.h"
#include "tap.h"

#define VM_UID "6f1f6d1e-2b0c-4c39-9a55-0d6a8f0c1a11"
#define SWTPM_DST "/var/lib/libvirt/swtpm/" VM_UID

typedef struct standin {
        pid_t pid;
        char dir[64];  /* temp dir on the host: socket lives here */
        char sock[128];
} standin;

typedef enum standin_mode {
        STANDIN_PRIVATE,         /* like a container: private mounts, tmpfs over /var/lib */
        STANDIN_CHROOT,          /* as PRIVATE, then chroot into /var/lib/croot */
        STANDIN_SHARED_WITH_HOST, /* new namespace, propagation left as inherited */
} standin_mode;

static _noreturn_ void standin_main(const standin *s, standin_mode mode, int ready_fd) {
        if (unshare(CLONE_NEWNS) < 0)
                _exit(10);
        if (mode != STANDIN_SHARED_WITH_HOST) {
                if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                        _exit(11);
                if (mount("tmpfs", "/var/lib", "tmpfs", 0, "mode=0755") < 0)
                        _exit(12);
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, s->sock);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0)
                _exit(13);
        if (mode == STANDIN_CHROOT) {
                if (mkdir("/var/lib/croot", 0755) < 0 || chroot("/var/lib/croot") < 0 || chdir("/") < 0)
                        _exit(14);
        }
        if (write(ready_fd, "R", 1) != 1)
                _exit(15);
        close(ready_fd);
        for (;;)
                pause();
}

static standin standin_start(standin_mode mode) {
        standin s = {0};
        strcpy(s.dir, "/tmp/vt-standin-XXXXXX");
        if (!mkdtemp(s.dir))
                abort();
        snprintf(s.sock, sizeof(s.sock), "%s/launcher.sock", s.dir);
        int p[2];
        if (pipe(p) < 0)
                abort();
        fflush(stdout);
        s.pid = fork();
        if (s.pid < 0)
                abort();
        if (s.pid == 0) {
                close(p[0]);
                standin_main(&s, mode, p[1]);
        }
        close(p[1]);
        char c = 0;
        if (read(p[0], &c, 1) != 1 || c != 'R') {
                int st = 0;
                waitpid(s.pid, &st, 0);
                printf("# stand-in failed to start, exit status %d\n", WEXITSTATUS(st));
                s.pid = -1;
        }
        close(p[0]);
        return s;
}

static void standin_stop(standin *s) {
        if (s->pid > 0) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, NULL, 0);
                s->pid = -1;
        }
        unlink(s->sock);
        rmdir(s->dir);
}

typedef struct volume {
        char path[64];
        bool mounted;
} volume;

/* A "published volume": a real tmpfs mounted at a temp dir, with a file. */
static volume volume_create(const char *content) {
        volume v = {0};
        strcpy(v.path, "/tmp/vt-vol-XXXXXX");
        if (!mkdtemp(v.path))
                abort();
        if (mount("tmpfs", v.path, "tmpfs", 0, "mode=0700,size=1m") < 0) {
                printf("# cannot mount tmpfs at %s: %m\n", v.path);
                return v;
        }
        v.mounted = true;
        _cleanup_free_ char *f = xasprintf("%s/tpm2-00.permall", v.path);
        if (write_file_atomic(f, content, strlen(content), 0600, NULL) < 0)
                abort();
        return v;
}

static void volume_destroy(volume *v) {
        if (v->mounted && umount2(v->path, MNT_DETACH) < 0)
                printf("# cannot unmount %s: %m\n", v->path);
        v->mounted = false;
        rmdir(v->path);
}

static char *read_in(pid_t pid, const char *path) {
        _cleanup_free_ char *p = xasprintf("/proc/%d/root%s", (int)pid, path);
        char *data = NULL;
        if (read_full_file(p, 4096, &data, NULL, NULL) < 0)
                return NULL;
        return data;
}

static const mountinfo_entry *find_in(pid_t pid, const char *path, mountinfo_table **t) {
        if (mountinfo_read(pid, t, NULL) < 0)
                return NULL;
        return mountinfo_find_mount_point(*t, path);
}

/* How many mounts of this volume the host namespace has: 1 (the published
 * one) unless something leaked. */
static size_t host_copies(const char *vol) {
        _cleanup_mountinfo_entry_ mountinfo_entry *id = NULL;
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        if (mount_source_identity(vol, &id, NULL) < 0 || mountinfo_read(0, &t, NULL) < 0)
                return 0;
        size_t n = 0;
        for (size_t i = 0; i < t->n; i++)
                n += mountinfo_entry_same_source(&t->entries[i], id);
        return n;
}

static size_t host_mount_count(void) {
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        return mountinfo_read(0, &t, NULL) < 0 ? 0 : t->n;
}

static void test_bind_verify_idempotent_unmount(void) {
        size_t host_before = host_mount_count();
        standin s = standin_start(STANDIN_PRIVATE);
        volume v = volume_create("state-bytes");
        if (!check(s.pid > 0 && v.mounted))
                goto out;

        /* peercred finds the launcher's pid from its socket */
        pid_t pid = 0;
        uid_t uid = 1;
        check_int_eq(peercred_of_socket(s.sock, &pid, &uid, NULL), 0);
        check_int_eq(pid, s.pid);
        check_int_eq(uid, 0);

        check_int_eq(check_mount_in_namespace(pid, v.path, SWTPM_DST, NULL), 0);

        _cleanup_error_ vt_error *err = NULL;
        int r = bind_mount_in_namespace(pid, v.path, SWTPM_DST, &err);
        check_int_eq(r, 0);
        if (err)
                printf("# %s\n", err->msg);

        /* the launcher sees the volume's file at the swtpm path ... */
        _cleanup_free_ char *data = read_in(pid, SWTPM_DST "/tpm2-00.permall");
        check_str_eq(data, "state-bytes");
        /* ... and what it writes there lands on the volume */
        _cleanup_free_ char *inside = xasprintf("/proc/%d/root%s/written-inside", (int)pid, SWTPM_DST);
        check_int_eq(write_file_atomic(inside, "x", 1, 0600, NULL), 0);
        _cleanup_free_ char *onvol = xasprintf("%s/written-inside", v.path);
        check_int_eq(access(onvol, F_OK), 0);

        /* mountinfo of the launcher: same device and root as the volume */
        _cleanup_mountinfo_entry_ mountinfo_entry *id = NULL;
        check_int_eq(mount_source_identity(v.path, &id, NULL), 0);
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        const mountinfo_entry *e = find_in(pid, SWTPM_DST, &t);
        check(e != NULL);
        check(mountinfo_entry_same_source(e, id));
        check_str_eq(e ? e->fstype : NULL, "tmpfs");

        /* parents were created 0711, reachable by swtpm as another user */
        _cleanup_free_ char *parent = xasprintf("/proc/%d/root/var/lib/libvirt/swtpm", (int)pid);
        struct stat st = {0};
        check_int_eq(stat(parent, &st), 0);
        check_int_eq(st.st_mode & 07777, 0711);

        /* not on the host: no such path, no extra mount, the volume once */
        check(access(SWTPM_DST, F_OK) < 0);
        check_int_eq(host_copies(v.path), 1);
        check_int_eq(host_mount_count(), host_before + 1); /* + the volume itself */

        /* idempotent: a second call changes nothing */
        check_int_eq(bind_mount_in_namespace(pid, v.path, SWTPM_DST, NULL), 1);
        check_int_eq(bind_mount_in_namespace(pid, v.path, SWTPM_DST "/", NULL), 1);
        check_int_eq(check_mount_in_namespace(pid, v.path, SWTPM_DST, NULL), 1);
        _cleanup_mountinfo_table_ mountinfo_table *t2 = NULL;
        check_int_eq(mountinfo_read(pid, &t2, NULL), 0);
        size_t at_dst = 0;
        for (size_t i = 0; t2 && i < t2->n; i++)
                at_dst += strcmp(t2->entries[i].mount_point, SWTPM_DST) == 0;
        check_int_eq(at_dst, 1);

        /* unmount: gone from the launcher, volume untouched on the host */
        _cleanup_error_ vt_error *uerr = NULL;
        check_int_eq(unmount_in_namespace(pid, SWTPM_DST, &uerr), 1);
        if (uerr)
                printf("# %s\n", uerr->msg);
        _cleanup_mountinfo_table_ mountinfo_table *t3 = NULL;
        check(find_in(pid, SWTPM_DST, &t3) == NULL);
        _cleanup_free_ char *gone = read_in(pid, SWTPM_DST "/tpm2-00.permall");
        check(gone == NULL);
        check_int_eq(unmount_in_namespace(pid, SWTPM_DST, NULL), 0);
        check_int_eq(access(onvol, F_OK), 0);
        check_int_eq(check_mount_in_namespace(pid, v.path, SWTPM_DST, NULL), 0);

        /* mount again after unmount works */
        check_int_eq(bind_mount_in_namespace(pid, v.path, SWTPM_DST, NULL), 0);
out:
        standin_stop(&s);
        volume_destroy(&v);
        check_int_eq(host_mount_count(), host_before);
}

static void test_other_fs_is_busy(void) {
        standin s = standin_start(STANDIN_PRIVATE);
        volume a = volume_create("a"), b = volume_create("b");
        if (!check(s.pid > 0 && a.mounted && b.mounted))
                goto out;
        check_int_eq(bind_mount_in_namespace(s.pid, b.path, SWTPM_DST, NULL), 0);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_in_namespace(s.pid, a.path, SWTPM_DST, &err), -EBUSY);
        check_contains(err ? err->msg : NULL, "already has another filesystem mounted");
        check_contains(err ? err->msg : NULL, SWTPM_DST);
        _cleanup_error_ vt_error *err2 = NULL;
        check_int_eq(check_mount_in_namespace(s.pid, a.path, SWTPM_DST, &err2), -EBUSY);
        /* still b there, nothing stacked */
        _cleanup_free_ char *data = read_in(s.pid, SWTPM_DST "/tpm2-00.permall");
        check_str_eq(data, "b");
out:
        standin_stop(&s);
        volume_destroy(&a);
        volume_destroy(&b);
}

static void test_src_not_a_mount_point(void) {
        standin s = standin_start(STANDIN_PRIVATE);
        char dir[] = "/tmp/vt-notmounted-XXXXXX";
        check(mkdtemp(dir) != NULL);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_in_namespace(s.pid, dir, SWTPM_DST, &err), -EINVAL);
        check_contains(err ? err->msg : NULL, "is not a mount point");
        _cleanup_error_ vt_error *err2 = NULL;
        check_int_eq(bind_mount_in_namespace(s.pid, "/tmp/vt-does-not-exist", SWTPM_DST, &err2), -ENOENT);
        check_contains(err2 ? err2->msg : NULL, "/tmp/vt-does-not-exist");
        /* nothing created in the launcher either */
        _cleanup_free_ char *p = xasprintf("/proc/%d/root/var/lib/libvirt", (int)s.pid);
        check(access(p, F_OK) < 0);
        rmdir(dir);
        standin_stop(&s);
}

static void test_symlink_in_target_refused(void) {
        standin s = standin_start(STANDIN_PRIVATE);
        volume v = volume_create("v");
        char victim[] = "/tmp/vt-victim-XXXXXX";
        check(mkdtemp(victim) != NULL);
        if (!check(s.pid > 0 && v.mounted))
                goto out;
        /* the "launcher" plants /var/lib/libvirt -> /tmp/vt-victim-... in its namespace */
        _cleanup_free_ char *link = xasprintf("/proc/%d/root/var/lib/libvirt", (int)s.pid);
        check_int_eq(symlink(victim, link), 0);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_in_namespace(s.pid, v.path, SWTPM_DST, &err), -ELOOP);
        check_contains(err ? err->msg : NULL, "/var/lib/libvirt in the mount namespace");
        /* nothing was created through the link */
        _cleanup_free_ char *through = xasprintf("%s/swtpm", victim);
        check(access(through, F_OK) < 0);
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        check(mountinfo_read(s.pid, &t, NULL) == 0 && mountinfo_find_covering(t, SWTPM_DST) &&
              strcmp(mountinfo_find_covering(t, SWTPM_DST)->mount_point, "/var/lib") == 0);
out:
        rmdir(victim);
        standin_stop(&s);
        volume_destroy(&v);
}

static void test_launcher_in_chroot(void) {
        standin s = standin_start(STANDIN_CHROOT);
        volume v = volume_create("chrooted");
        if (!check(s.pid > 0 && v.mounted))
                goto out;
        check_int_eq(bind_mount_in_namespace(s.pid, v.path, "/swtpm/" VM_UID, NULL), 0);
        /* /proc/<pid>/root is the launcher's root: the mount is where it looks */
        _cleanup_free_ char *data = read_in(s.pid, "/swtpm/" VM_UID "/tpm2-00.permall");
        check_str_eq(data, "chrooted");
        check_int_eq(check_mount_in_namespace(s.pid, v.path, "/swtpm/" VM_UID, NULL), 1);
        check_int_eq(unmount_in_namespace(s.pid, "/swtpm/" VM_UID, NULL), 1);
out:
        standin_stop(&s);
        volume_destroy(&v);
}

/* A mount under a shared mount whose peer group is also in the agent's
 * namespace would propagate back to the host: refused. */
static void test_shared_propagation_refused(void) {
        char shared[] = "/tmp/vt-shared-XXXXXX";
        check(mkdtemp(shared) != NULL);
        bool mounted = mount("tmpfs", shared, "tmpfs", 0, "size=1m") == 0;
        check(mounted && mount(NULL, shared, NULL, MS_SHARED, NULL) == 0);
        standin s = standin_start(STANDIN_SHARED_WITH_HOST);
        volume v = volume_create("v");
        size_t before = host_mount_count();
        _cleanup_free_ char *dst = xasprintf("%s/swtpm/" VM_UID, shared);
        if (!check(s.pid > 0 && v.mounted))
                goto out;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_in_namespace(s.pid, v.path, dst, &err), -EXDEV);
        check_contains(err ? err->msg : NULL, "propagates to the agent's namespace");
        check_int_eq(host_mount_count(), before);
        check_int_eq(host_copies(v.path), 1);
        check(access(dst, F_OK) < 0);
out:
        standin_stop(&s);
        volume_destroy(&v);
        if (mounted)
                umount2(shared, MNT_DETACH);
        rmdir(shared);
}

static void test_target_gone(void) {
        volume v = volume_create("v");
        pid_t child = fork();
        if (child == 0)
                _exit(0);
        waitpid(child, NULL, 0);
        _cleanup_error_ vt_error *err = NULL;
        int r = bind_mount_in_namespace(child, v.path, SWTPM_DST, &err);
        check(r == -ENOENT || r == -ESRCH);
        check_contains(err ? err->msg : NULL, "is gone");
        _cleanup_error_ vt_error *err2 = NULL;
        r = unmount_in_namespace(child, SWTPM_DST, &err2);
        check(r == -ENOENT || r == -ESRCH);
        volume_destroy(&v);
}

static void test_bad_arguments(void) {
        volume v = volume_create("v");
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_in_namespace(getpid(), v.path, "relative/path", &err), -EINVAL);
        check_contains(err ? err->msg : NULL, "not absolute");
        check_int_eq(bind_mount_in_namespace(getpid(), v.path, "/a/../b", NULL), -EINVAL);
        check_int_eq(bind_mount_in_namespace(getpid(), v.path, "/", NULL), -EINVAL);
        check_int_eq(unmount_in_namespace(getpid(), "//", NULL), -EINVAL);
        check_int_eq(bind_mount_in_namespace(0, v.path, "/x", NULL), -EINVAL);
        check_int_eq(bind_mount_in_namespace(getpid(), NULL, "/x", NULL), -EINVAL);
        volume_destroy(&v);
}

static void test_is_mount_point(void) {
        volume v = volume_create("v");
        check_int_eq(is_mount_point(v.path, NULL), 1);
        check_int_eq(is_mount_point("/", NULL), 1);
        check_int_eq(is_mount_point("/proc", NULL), 1);
        check_int_eq(is_mount_point("/tmp", NULL) >= 0, 1);
        _cleanup_free_ char *f = xasprintf("%s/tpm2-00.permall", v.path);
        check_int_eq(is_mount_point(f, NULL), 0);
        check_int_eq(is_mount_point("/nonexistent-vt", NULL), -ENOENT);

        _cleanup_mountinfo_entry_ mountinfo_entry *id = NULL, *id2 = NULL;
        check_int_eq(mount_source_identity(v.path, &id, NULL), 0);
        check_str_eq(id ? id->fstype : NULL, "tmpfs");
        check_str_eq(id ? id->mount_point : NULL, v.path);
        check_str_eq(id ? id->root : NULL, "/");
        check_int_eq(mount_source_identity(f, &id2, NULL), 0); /* the mount covering a file */
        check(mountinfo_entry_same_source(id, id2));

        /* a bind mount of a subdirectory: same device, root is the subdir */
        char sub[] = "/tmp/vt-sub-XXXXXX";
        check(mkdtemp(sub) != NULL);
        _cleanup_free_ char *subsrc = xasprintf("%s/pvc", v.path);
        check_int_eq(mkdir(subsrc, 0700), 0);
        if (check(mount(subsrc, sub, NULL, MS_BIND, NULL) == 0)) {
                _cleanup_mountinfo_entry_ mountinfo_entry *sid = NULL;
                check_int_eq(mount_source_identity(sub, &sid, NULL), 0);
                check_str_eq(sid ? sid->root : NULL, "/pvc");
                check(sid && id && sid->major == id->major && sid->minor == id->minor);
                check(!mountinfo_entry_same_source(sid, id));
                umount2(sub, MNT_DETACH);
        }
        rmdir(sub);
        volume_destroy(&v);
}

/* The control-socket directory goes into the launcher read-only: nothing can
 * be created there from inside, and a socket on it still accepts. */
static void test_bind_read_only(void) {
        standin s = standin_start(STANDIN_PRIVATE);
        volume v = volume_create("x");
        if (!check(s.pid > 0 && v.mounted))
                goto out;
        int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/ctrl.sock", v.path);
        check(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 4) == 0);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_in_namespace_ro(s.pid, v.path, "/run/vtpm", &err), 0);
        if (err)
                printf("# %s\n", err->msg);
        _cleanup_free_ char *planted = xasprintf("/proc/%d/root/run/vtpm/planted", (int)s.pid);
        check(symlink("/etc/shadow", planted) < 0 && errno == EROFS);
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un ca = {.sun_family = AF_UNIX};
        snprintf(ca.sun_path, sizeof(ca.sun_path), "/proc/%d/root/run/vtpm/ctrl.sock", (int)s.pid);
        check(c >= 0 && connect(c, (struct sockaddr *)&ca, sizeof(ca)) == 0);
        if (c >= 0)
                close(c);
        if (ls >= 0)
                close(ls);
        _cleanup_free_ char *sockfile = xasprintf("%s/ctrl.sock", v.path);
        unlink(sockfile);
out:
        standin_stop(&s);
        volume_destroy(&v);
}

int main(void) {
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root for mount namespaces\n");
                return 0;
        }
        /* The "host" namespace of this test: private, dies with the process. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                printf("1..0 # SKIP cannot create a mount namespace: %m\n");
                return 0;
        }
        return tap_run((tap_case[]){
                TAP_CASE(test_is_mount_point),
                TAP_CASE(test_bind_verify_idempotent_unmount),
                TAP_CASE(test_other_fs_is_busy),
                TAP_CASE(test_src_not_a_mount_point),
                TAP_CASE(test_symlink_in_target_refused),
                TAP_CASE(test_launcher_in_chroot),
                TAP_CASE(test_shared_propagation_refused),
                TAP_CASE(test_target_gone),
                TAP_CASE(test_bad_arguments),
                TAP_CASE(test_bind_read_only),
                {0},
        });
}
