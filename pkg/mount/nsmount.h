/* SPDX-License-Identifier: Apache-2.0 */
/* Bind-mount a volume that is mounted in the agent's mount namespace into
 * another process's mount namespace (the virt-launcher's), the way systemd's
 * bind_mount_in_namespace() does it:
 *
 *   agent:  fd = open_tree(src, OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC)  (a detached copy)
 *   child:  setns(/proc/<pid>/ns/mnt); chroot to /proc/<pid>/root;
 *           mkdir -p dst (no symlinks); move_mount(fd, "", dst)
 *   agent:  verify in /proc/<pid>/mountinfo that dst is src (major:minor and root)
 *
 * setns() runs in a short-lived forked child, never in the agent's threads:
 * a thread that switched mount namespace would see (and write) the wrong
 * filesystem. The child only makes system calls (no allocation), so forking
 * from a multi-threaded agent is safe. It reports its result through a pipe.
 *
 * Ownership and modes. The directories created on the way to dst are 0711
 * root (others may traverse, not list: swtpm running as `tss` must reach its
 * state directory, other users need not learn the VM UIDs next to it); the
 * last one is 0700 but is hidden by the mount: once mounted, what swtpm needs
 * is governed by the VOLUME's root directory (owner tss, 0700, set by whoever
 * provisions the state), not by anything created here. Existing directories
 * are left as they are.
 *
 * The mount must stay in the launcher's namespace. If the mount that would
 * hold dst there is shared with a peer group visible in the agent's namespace,
 * the kernel would propagate the new mount back to the host: that is refused
 * (-EXDEV) before mounting, and re-checked afterwards.
 *
 * PIDs: these functions trust that `target_pid` still names the launcher; the
 * caller checks (proc_start_time) before and after. Callers that reap
 * children with waitpid(-1) must not race with the helper child. */
#pragma once

#include <sys/types.h>

#include "base/error.h"

/* Returns 0 when the volume was mounted now, 1 when exactly that volume
 * (same major:minor and root) was already mounted at dst. Errors:
 *   -EINVAL  src is not a mount point (the volume is not published), or a bad path
 *   -EBUSY   something else is mounted at dst in the target namespace
 *   -ELOOP/-ENOTDIR  a component of dst in the target namespace is a symlink
 *            or not a directory (never followed: the launcher controls it)
 *   -EXDEV   the mount would show up in the agent's own namespace
 *   -EIO     the mount did not verify in /proc/<pid>/mountinfo
 *   -ESRCH/-ENOENT  the target process is gone
 * and the step that failed (setns, mkdir, move_mount...) in the message. */
int bind_mount_in_namespace(pid_t target_pid, const char *src, const char *dst, vt_error **err);
/* The same, read-only (and nosuid, nodev, noexec) in the target namespace: a
 * unix socket on it can still be connected to, nothing can be created. */
int bind_mount_in_namespace_ro(pid_t target_pid, const char *src, const char *dst, vt_error **err);

/* Read-only check, e.g. before starting swtpm or when adopting one after an
 * agent restart: 1 if dst in the target namespace is the volume mounted at
 * src (same major:minor and root), 0 if nothing is mounted at dst, -EBUSY if
 * something else is, -EINVAL if src is not a mount point. */
int check_mount_in_namespace(pid_t target_pid, const char *src, const char *dst, vt_error **err);

/* umount2(dst, MNT_DETACH) in the target namespace. Returns 1 when a mount
 * was removed, 0 when nothing was mounted at dst. */
int unmount_in_namespace(pid_t target_pid, const char *dst, vt_error **err);
