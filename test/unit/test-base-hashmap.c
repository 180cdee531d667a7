/* SPDX-License-Identifier: Apache-2.0 */
/* The string hash map: ownership of keys and values, and agreement with a
 * brute-force reference across growth, deletion (backward shift) and shrink. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hashmap.h"
#include "tap.h"

static int freed;
static void count_free(void *p) {
        freed++;
        free(p);
}

static void test_basic(void) {
        freed = 0;
        vt_hashmap *m = vt_hashmap_new(count_free);
        check_int_eq(vt_hashmap_size(m), 0);
        check(vt_hashmap_get(m, "ns/a") == NULL);
        check(!vt_hashmap_remove(m, "ns/a"));

        char key[] = "ns/a";
        check_int_eq(vt_hashmap_put(m, key, xstrdup("1")), 1);
        key[3] = 'b'; /* the map copied the key */
        check_str_eq(vt_hashmap_get(m, "ns/a"), "1");
        check(!vt_hashmap_contains(m, "ns/b"));

        /* Replacing frees the old value. */
        check_int_eq(vt_hashmap_put(m, "ns/a", xstrdup("2")), 0);
        check_int_eq(freed, 1);
        check_str_eq(vt_hashmap_get(m, "ns/a"), "2");
        check_int_eq(vt_hashmap_size(m), 1);

        /* lookup exposes the map's own key copy. */
        const char *k = NULL;
        void *v = NULL;
        check(vt_hashmap_lookup(m, "ns/a", &k, &v));
        check_str_eq(k, "ns/a");
        check(k != key);
        check_str_eq(v, "2");

        /* steal hands the value back without freeing it. */
        char *s = vt_hashmap_steal(m, "ns/a");
        check_str_eq(s, "2");
        check_int_eq(freed, 1);
        free(s);
        check_int_eq(vt_hashmap_size(m), 0);

        /* remove, clear and free free the values. */
        vt_hashmap_put(m, "x", xstrdup("x"));
        vt_hashmap_put(m, "y", xstrdup("y"));
        vt_hashmap_put(m, "z", xstrdup("z"));
        check(vt_hashmap_remove(m, "x"));
        check_int_eq(freed, 2);
        vt_hashmap_clear(m);
        check_int_eq(freed, 4);
        check_int_eq(vt_hashmap_size(m), 0);
        vt_hashmap_put(m, "again", xstrdup("a"));
        check_str_eq(vt_hashmap_get(m, "again"), "a");
        vt_hashmap_free(m);
        check_int_eq(freed, 5);

        /* The empty key and a NULL destructor are fine. */
        m = vt_hashmap_new(NULL);
        vt_hashmap_put(m, "", (void *)1);
        check(vt_hashmap_get(m, "") == (void *)1);
        vt_hashmap_free(m);
}

/* Random puts/removes against a plain array, checking every key each round
 * of 1000 operations, through growth to 20,000 keys and back down. */
static void test_against_reference(void) {
        enum { N = 20000 };
        static long ref[N]; /* 0: absent, else the value stored */
        memset(ref, 0, sizeof(ref));
        vt_hashmap *m = vt_hashmap_new(NULL);
        unsigned seed = 42;
        size_t present = 0;
        int mismatches = 0;
        char key[32];
        for (int op = 1; op <= 200000; op++) {
                int i = rand_r(&seed) % N;
                snprintf(key, sizeof(key), "vms/vm-%d", i);
                /* First half mostly inserts, second half mostly removes. */
                bool insert = (rand_r(&seed) % 100) < (op < 100000 ? 80 : 20);
                if (insert) {
                        int r = vt_hashmap_put(m, key, (void *)(long)op);
                        mismatches += (r == 1) != (ref[i] == 0);
                        present += ref[i] == 0;
                        ref[i] = op;
                } else {
                        bool r = vt_hashmap_remove(m, key);
                        mismatches += r != (ref[i] != 0);
                        present -= ref[i] != 0;
                        ref[i] = 0;
                }
                if (op % 1000 == 0) {
                        mismatches += vt_hashmap_size(m) != present;
                        for (int j = 0; j < N; j++) {
                                snprintf(key, sizeof(key), "vms/vm-%d", j);
                                mismatches += (long)vt_hashmap_get(m, key) != ref[j];
                        }
                }
        }
        check_int_eq(mismatches, 0);

        /* Iteration visits every entry exactly once. */
        static char seen[N];
        memset(seen, 0, sizeof(seen));
        size_t n = 0;
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(m, &it, &k, &v);) {
                int j = atoi(k + strlen("vms/vm-"));
                check(j >= 0 && j < N && !seen[j] && (long)v == ref[j]);
                seen[j] = 1;
                n++;
        }
        check_int_eq(n, present);

        /* Remove everything (the table shrinks on the way). */
        for (int j = 0; j < N; j++) {
                snprintf(key, sizeof(key), "vms/vm-%d", j);
                vt_hashmap_remove(m, key);
        }
        check_int_eq(vt_hashmap_size(m), 0);
        vt_hashmap_iter it = {0};
        check(!vt_hashmap_next(m, &it, NULL, NULL));
        vt_hashmap_free(m);
}

static void test_hash_is_keyed_and_stable(void) {
        /* Same input, same hash within the process; different inputs differ. */
        check(vt_hash_string("vms/a", 5) == vt_hash_string("vms/a", 5));
        check(vt_hash_string("vms/a", 5) != vt_hash_string("vms/b", 5));
        check(vt_hash_string("", 0) != vt_hash_string("\0", 1));
        /* Lengths around the 8-byte block boundary all differ. */
        const char *s = "0123456789abcdefghij";
        int same = 0;
        for (size_t i = 1; i < 20; i++)
                same += vt_hash_string(s, i) == vt_hash_string(s, i - 1);
        check_int_eq(same, 0);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_basic),
                TAP_CASE(test_against_reference),
                TAP_CASE(test_hash_is_keyed_and_stable),
                {0},
        });
}
