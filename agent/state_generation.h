/* SPDX-License-Identifier: Apache-2.0 */
/* Generations of a VM's TPM state on its volume: how a live migration hands
 * the state from one swtpm to another without two writers on one file.
 *
 * The state lives at the volume's root (generation "", every VM until its
 * first migration) or in a directory `m-<migration uid>` that the file
 * `vtpm-current` at the root names. A migration's target swtpm writes only
 * its own, new generation: it is seeded with a copy of the current one
 * (permanent state and key header, so it never starts empty and never makes
 * a new TPM), then QEMU's migration stream overwrites it with the running
 * TPM's state. Only when KubeVirt says the migration completed does the
 * target's agent switch `vtpm-current` to it (one atomic rename); until
 * then the source's generation stays current, so a failed or cancelled
 * migration leaves the VM with the state its source kept writing.
 *
 * The volume is the tenant's: the marker is parsed strictly (a name the
 * agent makes, never a path) and everything is opened beneath the volume's
 * fd without following symlinks (base/fileat.h). A marker that is not the
 * agent's, or that names a generation that is missing, is an error: never a
 * silent fall-back to older state. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

#define STATE_GENERATION_MARKER "vtpm-current"
#define STATE_GENERATION_PREFIX "m-"

/* The marker's content: "m-<id>" and an optional newline, id 1-64 of
 * [0-9a-z-]. 0 with *ret_name (caller frees), or -EBADMSG. */
int state_generation_parse(const char *data, size_t len, char **ret_name);

/* Is `name` a generation's name (as the parser accepts)? */
bool state_generation_name_valid(const char *name);

/* The generation a migration's target writes: "m-<migration uid>"; NULL when
 * the uid would not make a valid name. Caller frees. */
char *state_generation_for_migration(const char *migration_uid);

/* The volume's current generation: *ret_name NULL for the root (no marker),
 * else its name (caller frees). -EBADMSG: the marker is not the agent's;
 * -ENOENT: it names a generation that is not a directory on the volume. */
int state_generation_current(int vol_dfd, char **ret_name, vt_error **err);

/* Open the directory of generation `name` (NULL or "": the root itself, a
 * new fd of it) beneath the volume. The fd, or -errno with *err. */
int state_generation_open(int vol_dfd, const char *name, vt_error **err);

/* Make generation `name` afresh for a migration target: a leftover of that
 * name (a failed attempt, or the tenant's) is removed, the directory made
 * (0700) and seeded with the current generation's permanent state and key
 * header. -EBUSY when `name` is the current generation (it is never
 * touched). */
int state_generation_prepare(int vol_dfd, const char *name, vt_error **err);

/* Make `name` the current generation: the marker replaced atomically and
 * fsynced with the volume's root. */
int state_generation_switch(int vol_dfd, const char *name, vt_error **err);

/* Remove every `m-*` generation but the current one (the root's own files
 * are never removed). The number removed, or -errno (the first error; what
 * could go went). */
int state_generation_prune(int vol_dfd, vt_error **err);
