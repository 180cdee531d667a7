/* SPDX-License-Identifier: Apache-2.0 */
#include "keys/rotation.h" /* moved to pkg/keys (issue 19): include that instead */
