/* SPDX-License-Identifier: Apache-2.0 */
/* Tell a callback when a name appears in a directory (inotify IN_CREATE and
 * IN_MOVED_TO), from a thread of its own. The node controller uses it to
 * learn the moment a launcher's socket exists instead of polling for it. */
#pragma once

#include "base/error.h"

typedef struct dir_watch dir_watch;
typedef void (*dir_watch_fn)(const char *name, void *userdata);

/* Start watching `dir` (it must exist). The callback runs on the watch's
 * thread with the entry's name (no directory part). */
int dir_watch_start(const char *dir, dir_watch_fn fn, void *userdata, dir_watch **ret, vt_error **err);
/* Stop the thread (within ~100 ms) and free. NULL is fine. */
void dir_watch_stop(dir_watch *w);
