/* SPDX-License-Identifier: Apache-2.0 */
/* /proc/<pid>/mountinfo parsing: fields, escapes, optional fields, stacked
 * mounts, and refusal of malformed lines. */
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "mount/mountinfo.h"
#include "tap.h"

static int parse(const char *text, mountinfo_table **t) {
        return mountinfo_parse(text, strlen(text), t, NULL);
}

static void test_parse_all_fields(void) {
        const char *line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        mountinfo_entry e = {0};
        check_int_eq(mountinfo_parse_line(line, strlen(line), &e, NULL), 0);
        check_int_eq(e.mount_id, 36);
        check_int_eq(e.parent_id, 35);
        check_int_eq(e.major, 98);
        check_int_eq(e.minor, 0);
        check_str_eq(e.root, "/mnt1");
        check_str_eq(e.mount_point, "/mnt2");
        check_str_eq(e.mount_options, "rw,noatime");
        check_int_eq(e.n_optional, 1);
        if (e.n_optional == 1)
                check_str_eq(e.optional[0], "master:1");
        check_str_eq(e.fstype, "ext3");
        check_str_eq(e.source, "/dev/root");
        check_str_eq(e.super_options, "rw,errors=continue");
        int shared = -1, master = -1;
        mountinfo_entry_peer_groups(&e, &shared, &master);
        check_int_eq(shared, 0);
        check_int_eq(master, 1);
        mountinfo_entry_done(&e);
}

static void test_optional_fields(void) {
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        check_int_eq(parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                           "2 1 0:5 / /a rw shared:7 master:3 propagate_from:2 unbindable - tmpfs tmpfs rw\n",
                           &t),
                     0);
        if (!t)
                return;
        check_int_eq(t->n, 2);
        check_int_eq(t->entries[0].n_optional, 0);
        check_int_eq(t->entries[1].n_optional, 4);
        check_str_eq(t->entries[1].optional[2], "propagate_from:2");
        check_str_eq(t->entries[1].optional[3], "unbindable");
        int shared, master;
        mountinfo_entry_peer_groups(&t->entries[1], &shared, &master);
        check_int_eq(shared, 7);
        check_int_eq(master, 3);
}

static void test_escapes(void) {
        /* space, tab, newline and backslash as the kernel's mangle() prints them */
        const char *line = "40 26 0:50 /sub\\040dir /mnt/a\\040b\\011c\\012d\\134e rw - fuse\\040x my\\040src rw";
        mountinfo_entry e = {0};
        check_int_eq(mountinfo_parse_line(line, strlen(line), &e, NULL), 0);
        check_str_eq(e.root, "/sub dir");
        check_str_eq(e.mount_point, "/mnt/a b\tc\nd\\e");
        check_str_eq(e.fstype, "fuse x");
        check_str_eq(e.source, "my src");
        mountinfo_entry_done(&e);

        /* a backslash that is not an escape stays literal */
        const char *odd = "41 26 0:50 / /x\\9 rw - tmpfs a\\ rw";
        check_int_eq(mountinfo_parse_line(odd, strlen(odd), &e, NULL), 0);
        check_str_eq(e.mount_point, "/x\\9");
        check_str_eq(e.source, "a\\");
        mountinfo_entry_done(&e);
}

static void test_empty_source(void) {
        /* mount -t tmpfs "" /x prints an empty source: two spaces in a row */
        const char *line = "42 26 0:51 / /x rw,relatime - tmpfs  rw,size=4k";
        mountinfo_entry e = {0};
        check_int_eq(mountinfo_parse_line(line, strlen(line), &e, NULL), 0);
        check_str_eq(e.source, "");
        check_str_eq(e.super_options, "rw,size=4k");
        mountinfo_entry_done(&e);
}

static void test_malformed(void) {
        static const char *const bad[] = {
                "",
                "36 35 98:0 /mnt1 /mnt2",
                "36 35 98:0 /mnt1 /mnt2 rw master:1 ext3 /dev/root rw", /* no "-" */
                "36 35 98:0 /mnt1 /mnt2 rw - ext3",                    /* too few after "-" */
                "x 35 98:0 / / rw - ext3 /dev/root rw",
                "36 35 980 / / rw - ext3 /dev/root rw",               /* no colon */
                "36 35 98: / / rw - ext3 /dev/root rw",
                "36 35 98:0:1 / / rw - ext3 /dev/root rw",
                "99999999999 35 98:0 / / rw - ext3 /dev/root rw",      /* overflow */
                "36 35 98:0 / /a\\000b rw - ext3 /dev/root rw",        /* decoded NUL */
                "36 35 98:0  / rw - ext3 /dev/root rw",               /* empty root */
                "36 35 98:0 / / rw  - ext3 /dev/root rw",             /* empty optional field */
                "36 35 98:0 / / rw -  /dev/root rw",                  /* empty fstype */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                mountinfo_entry e = {0};
                _cleanup_error_ vt_error *err = NULL;
                int r = mountinfo_parse_line(bad[i], strlen(bad[i]), &e, &err);
                if (!check(r == -EBADMSG))
                        printf("#     line %zu parsed: r=%d\n", i, r);
                check(err != NULL);
                mountinfo_entry_done(&e);
        }
        /* an embedded NUL */
        const char nul[] = "36 35 98:0 / /a\0b rw - ext3 /dev/root rw";
        mountinfo_entry e = {0};
        check_int_eq(mountinfo_parse_line(nul, sizeof(nul) - 1, &e, NULL), -EBADMSG);

        /* one bad line fails the file and the message names it */
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        _cleanup_error_ vt_error *err = NULL;
        const char *text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\ngarbage\n";
        check_int_eq(mountinfo_parse(text, strlen(text), &t, &err), -EBADMSG);
        check(t == NULL);
        check_contains(err ? err->msg : NULL, "line 3");
}

static void test_no_trailing_newline_and_blank_lines(void) {
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        check_int_eq(parse("\n1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\n2 1 0:5 / /a rw - tmpfs t rw", &t), 0);
        check_int_eq(t ? t->n : 0, 2);
}

/* Mounts stacked on one mount point, listed in either order: the one whose
 * parent is the other is on top. This machine lists them by creation order
 * (/ has ID 26 after its children 21..25), so file order is not the stack. */
static void test_stacked_top_wins(void) {
        const char *base = "26 1 254:0 / / rw - ext4 /dev/vda rw\n"
                           "25 26 0:23 / /dev/pts rw - devpts devpts rw\n"
                           "28 25 0:25 / /dev/pts rw - devpts devpts rw,mode=600\n";
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        check_int_eq(parse(base, &t), 0);
        const mountinfo_entry *e = mountinfo_find_mount_point(t, "/dev/pts");
        check_int_eq(e ? e->mount_id : -1, 28);

        /* The older mount moved on top of a newer one comes first in the file. */
        const char *moved = "26 1 254:0 / / rw - ext4 /dev/vda rw\n"
                            "30 40 0:31 / /v rw - tmpfs volume rw\n"
                            "40 26 0:40 / /v rw - tmpfs other rw\n";
        _cleanup_mountinfo_table_ mountinfo_table *t2 = NULL;
        check_int_eq(parse(moved, &t2), 0);
        e = mountinfo_find_mount_point(t2, "/v/");
        check_int_eq(e ? e->mount_id : -1, 30);

        /* No parent link between them: the last one listed. */
        const char *flat = "26 1 254:0 / / rw - ext4 /dev/vda rw\n"
                           "30 26 0:31 / /v rw - tmpfs a rw\n"
                           "40 26 0:40 / /v rw - tmpfs b rw\n";
        _cleanup_mountinfo_table_ mountinfo_table *t3 = NULL;
        check_int_eq(parse(flat, &t3), 0);
        e = mountinfo_find_mount_point(t3, "//v");
        check_int_eq(e ? e->mount_id : -1, 40);
        check(mountinfo_find_mount_point(t3, "/w") == NULL);
        check(mountinfo_find_id(t3, 30) == &t3->entries[1]);
        check(mountinfo_find_id(t3, 31) == NULL);
}

static void test_covering(void) {
        const char *text = "26 1 254:0 / / rw - ext4 /dev/vda rw\n"
                           "27 26 0:31 / /var/lib rw - tmpfs a rw\n"
                           "28 27 0:32 / /var/lib/x\\040y rw - tmpfs b rw\n";
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        check_int_eq(parse(text, &t), 0);
        const mountinfo_entry *e = mountinfo_find_covering(t, "/var/lib/libvirt/swtpm/u");
        check_int_eq(e ? e->mount_id : -1, 27);
        e = mountinfo_find_covering(t, "/var/library"); /* component-wise, not a string prefix */
        check_int_eq(e ? e->mount_id : -1, 26);
        e = mountinfo_find_covering(t, "/var/lib/x y/z");
        check_int_eq(e ? e->mount_id : -1, 28);
        e = mountinfo_find_covering(t, "/");
        check_int_eq(e ? e->mount_id : -1, 26);
        check(mountinfo_find_covering(t, "relative") == NULL);
}

static void test_same_source(void) {
        const char *text = "1 0 8:1 /pvc /a rw - ext4 /dev/sda1 rw\n"
                           "2 0 8:1 /pvc /b rw - ext4 /dev/sda1 ro\n"
                           "3 0 8:1 / /c rw - ext4 /dev/sda1 rw\n"
                           "4 0 8:2 /pvc /d rw - ext4 /dev/sda2 rw\n";
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        check_int_eq(parse(text, &t), 0);
        if (!t || t->n != 4)
                return;
        check(mountinfo_entry_same_source(&t->entries[0], &t->entries[1]));
        check(!mountinfo_entry_same_source(&t->entries[0], &t->entries[2])); /* other root */
        check(!mountinfo_entry_same_source(&t->entries[0], &t->entries[3])); /* other device */
        check(!mountinfo_entry_same_source(&t->entries[0], NULL));
        _cleanup_mountinfo_entry_ mountinfo_entry *c = mountinfo_entry_copy(&t->entries[1]);
        check(mountinfo_entry_same_source(c, &t->entries[0]));
        check_str_eq(c->super_options, "ro");
}

static void test_normalize(void) {
        char *s = NULL;
        check_int_eq(mount_path_normalize("//a///b/./c/", &s, NULL), 0);
        check_str_eq(s, "/a/b/c");
        free(s);
        check_int_eq(mount_path_normalize("/", &s, NULL), 0);
        check_str_eq(s, "/");
        free(s);
        check_int_eq(mount_path_normalize("/./", &s, NULL), 0);
        check_str_eq(s, "/");
        free(s);
        check_int_eq(mount_path_normalize("/a/../etc", &s, NULL), -EINVAL);
        check_int_eq(mount_path_normalize("a/b", &s, NULL), -EINVAL);
        check_int_eq(mount_path_normalize("/a/..b", &s, NULL), 0); /* a name, not ".." */
        check_str_eq(s, "/a/..b");
        free(s);
}

static void test_read_self(void) {
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(mountinfo_read(0, &t, &err), 0);
        check(t && t->n > 0);
        check(mountinfo_find_mount_point(t, "/") != NULL);
        check(mountinfo_find_mount_point(t, "/proc") != NULL);
        _cleanup_mountinfo_table_ mountinfo_table *t2 = NULL;
        check_int_eq(mountinfo_read(getpid(), &t2, NULL), 0);
        check_int_eq(t2 ? t2->n : 0, t ? t->n : 1);
        _cleanup_error_ vt_error *err2 = NULL;
        mountinfo_table *none = NULL;
        check_int_eq(mountinfo_read(999999999, &none, &err2), -ENOENT);
        check_contains(err2 ? err2->msg : NULL, "/proc/999999999/mountinfo");
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_parse_all_fields),
                TAP_CASE(test_optional_fields),
                TAP_CASE(test_escapes),
                TAP_CASE(test_empty_source),
                TAP_CASE(test_malformed),
                TAP_CASE(test_no_trailing_newline_and_blank_lines),
                TAP_CASE(test_stacked_top_wins),
                TAP_CASE(test_covering),
                TAP_CASE(test_same_source),
                TAP_CASE(test_normalize),
                TAP_CASE(test_read_self),
                {0},
        });
}
