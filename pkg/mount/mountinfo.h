/* SPDX-License-Identifier: Apache-2.0 */
/* Parser for /proc/<pid>/mountinfo (proc(5)).
 *
 *   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2)(3)   (4)   (5)      (6)      (7)  (8)(9)   (10)         (11)
 *
 * The agent reads the mountinfo of launcher processes, i.e. of namespaces it
 * does not control, so the parser treats its input as hostile: every field is
 * bounds-checked, octal escapes (\040 for a space, \011, \012, \134) are
 * decoded, and a malformed line is an error, never a crash or a guess.
 *
 * Paths (root, mount_point) are as the kernel prints them: mount points are
 * relative to the root of the process whose mountinfo was read. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

typedef struct mountinfo_entry {
        int mount_id;           /* (1) */
        int parent_id;          /* (2) */
        unsigned major, minor;  /* (3) st_dev of files on this filesystem */
        char *root;             /* (4) decoded: the directory of the filesystem mounted here */
        char *mount_point;      /* (5) decoded */
        char *mount_options;    /* (6) per-mount options */
        char **optional;        /* (7) "shared:N", "master:N", ...; n_optional entries */
        size_t n_optional;
        char *fstype;           /* (9) */
        char *source;           /* (10) decoded; "none" etc. as printed */
        char *super_options;    /* (11) */
} mountinfo_entry;

typedef struct mountinfo_table {
        mountinfo_entry *entries;
        size_t n;
} mountinfo_table;

/* Parse one line (without its newline; `len` bytes, need not be NUL-terminated)
 * into *ret, which the caller clears with mountinfo_entry_done(). */
int mountinfo_parse_line(const char *line, size_t len, mountinfo_entry *ret, vt_error **err);
/* Parse a whole file's content. Empty lines are skipped; any malformed line
 * fails the whole parse (-EBADMSG, the message names the line number). */
int mountinfo_parse(const char *data, size_t size, mountinfo_table **ret, vt_error **err);
/* Read and parse /proc/<pid>/mountinfo; pid 0 means /proc/self. */
int mountinfo_read(pid_t pid, mountinfo_table **ret, vt_error **err);

void mountinfo_entry_done(mountinfo_entry *e);
void mountinfo_entry_free(mountinfo_entry *e);
void mountinfo_table_free(mountinfo_table *t);
mountinfo_entry *mountinfo_entry_copy(const mountinfo_entry *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(mountinfo_table *, mountinfo_table_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(mountinfo_entry *, mountinfo_entry_free)
#define _cleanup_mountinfo_table_ _cleanup_(mountinfo_table_freep)
#define _cleanup_mountinfo_entry_ _cleanup_(mountinfo_entry_freep)

/* The mount visible at exactly `path` (normalised: duplicate and trailing
 * slashes ignored), or NULL. When several mounts are stacked on one mount
 * point, the one on top wins: the entry that is not the parent of another
 * entry at the same mount point (the last such entry in file order if the
 * parent links do not decide). File order alone is not enough: since Linux
 * 6.8 mountinfo lists mounts by creation order, and an older mount can be
 * moved on top of a newer one. */
const mountinfo_entry *mountinfo_find_mount_point(const mountinfo_table *t, const char *path);
/* The mount that contains `path`: the top mount at the longest mount point
 * that is a path prefix of it (component-wise). NULL only if there is no "/". */
const mountinfo_entry *mountinfo_find_covering(const mountinfo_table *t, const char *path);
/* Look an entry up by its mount ID (as statx STATX_MNT_ID reports it). */
const mountinfo_entry *mountinfo_find_id(const mountinfo_table *t, int mount_id);

/* Same filesystem and same directory of it: device major:minor AND root.
 * This is what "the launcher sees the published volume" means. */
bool mountinfo_entry_same_source(const mountinfo_entry *a, const mountinfo_entry *b);
/* Peer group IDs from the optional fields: "shared:N" and "master:N"
 * (0 when absent). */
void mountinfo_entry_peer_groups(const mountinfo_entry *e, int *ret_shared, int *ret_master);

/* Normalise an absolute path for comparison with mountinfo: collapse "//",
 * drop "/./" and a trailing "/". Refuses relative paths and ".." (-EINVAL):
 * mountinfo paths are canonical, and ".." cannot be resolved without the
 * filesystem. */
int mount_path_normalize(const char *path, char **ret, vt_error **err);
