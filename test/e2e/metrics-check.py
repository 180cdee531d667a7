#!/usr/bin/env python3
"""A strict parser for the Prometheus text exposition format (0.0.4), used by
the e2e suite in place of promtool (not packaged here). Reads the exposition
on stdin; prints "name value" for every sample of the names given as
arguments (summed over labels); exits 1 with a message on any format error."""
import math
import re
import sys

NAME = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def fail(msg):
    print("metrics: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    types, helps, sums = {}, {}, {}
    last_bucket = {}
    for n, line in enumerate(sys.stdin.read().split("\n"), 1):
        if not line:
            continue
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            if not NAME.match(name) or name in helps:
                fail(f"line {n}: bad or repeated HELP for {name}")
            helps[name] = True
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) != 4 or parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                fail(f"line {n}: bad TYPE line: {line}")
            if parts[2] in types:
                fail(f"line {n}: TYPE repeated for {parts[2]}")
            types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            fail(f"line {n}: not a sample: {line!r}")
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        base = re.sub(r'_(bucket|sum|count)$', '', name)
        fam = name if name in types else base
        if fam not in types:
            fail(f"line {n}: sample {name} before its TYPE")
        rest = labels
        lab = {}
        while rest:
            lm = LABEL.match(rest)
            if not lm:
                fail(f"line {n}: bad labels {labels!r}")
            lab[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        try:
            v = float(value.replace("+Inf", "inf").replace("-Inf", "-inf"))
        except ValueError:
            fail(f"line {n}: bad value {value!r}")
        if types[fam] == "counter" and (v < 0 or math.isnan(v)):
            fail(f"line {n}: negative counter")
        if types[fam] == "histogram" and name.endswith("_bucket"):
            key = (fam, tuple(sorted((k, x) for k, x in lab.items() if k != "le")))
            if "le" not in lab:
                fail(f"line {n}: bucket without le")
            if v < last_bucket.get(key, 0):
                fail(f"line {n}: bucket counts must not decrease")
            last_bucket[key] = v
        sums[name] = sums.get(name, 0) + v
    for want in sys.argv[1:]:
        print(f"{want} {sums.get(want, 0):g}")


main()
