#!/usr/bin/env python3
"""Where a profiled gateway's CPU goes, by owner (docs/performance.md, "The profiles").

    perf record -F 299 --call-graph dwarf,32768 -p PID -o perf.data -- sleep 4
    perf script --no-inline -i perf.data | bench/scripts/perf-owners.py [CATEGORY [N]]

Each sample counts once, for the first frame from the leaf up that matches a category below:
allocation, copying and the kernel's own helpers count for whoever called them. With a
CATEGORY (a part of its name), prints instead the N frames that took most of its samples.
"""

import collections
import re
import sys

CATEGORIES = [
    ("the log line (formatting, the writer thread)",
     r"tracing_subscriber::fmt|format_event|FormatEvent|FormatFields|telemetry::writer"),
    ("tracing spans", r"tracing_subscriber|tracing_core|tracing::span|tracing::instrument|opentelemetry"),
    ("the plugin's own code (wasm)", r"^wasm\["),
    ("a fresh instance: allocating, initialising, resetting",
     r"instantiate|InstancePre|pooling|vm::instance::Instance::new|ModuleRegistry|MemoryImage"
     r"|decommit|pagemap|PAGEMAP|madvise|CompiledFunctionsTable"),
    ("wasmtime: calls, lifting and lowering, host functions",
     r"wasmtime|wasi|cranelift|fiber|platform_gateway::capability|platform_gateway::contract|bindings"),
    ("the state store: the ownership index", r"redb::|RedbStore|ownership|Upkeep"),
    ("the gateway: routing, merging, checking, serialising", r"platform_gateway::"),
    ("hyper, axum, tower", r"hyper|axum|tower|h1::"),
    ("tokio's scheduler", r"tokio::|mio::"),
    ("the kernel: loopback TCP",
     r"tcp_|ip_|sock_|netif|skb|inet_|sendto|recvfrom|writev|readv|__libc_write|__libc_read"),
    ("the kernel: scheduling, futexes, wake-ups", r"schedule|finish_task_switch|futex|epoll|syscall|irqentry"),
]
PATTERNS = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]


def samples(lines):
    """(thread, frames from the leaf up) for each sample of `perf script`'s output."""
    thread, frames = None, []
    for line in lines:
        if not line.strip():
            if thread is not None:
                yield thread, frames
            thread, frames = None, []
        elif not line.startswith(("\t", " ")):
            thread = line[:16].strip()
        else:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                frames.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1].rsplit(" (", 1)[0]))
    if thread is not None:
        yield thread, frames


def owner(thread, frames):
    """The category and the frame that owns a sample."""
    if thread.startswith("log-writer"):
        return CATEGORIES[0][0], thread
    for frame in frames:
        for name, pattern in PATTERNS:
            if pattern.search(frame):
                return name, frame
    return "other", frames[0] if frames else "?"


def main():
    want = sys.argv[1] if len(sys.argv) > 1 else None
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    counts, total = collections.Counter(), 0
    for thread, frames in samples(sys.stdin):
        total += 1
        category, frame = owner(thread, frames)
        if want is None:
            counts[category] += 1
        elif want in category:
            counts[frame[:120]] += 1
    for key, count in counts.most_common(None if want is None else top):
        print(f"{100 * count / max(total, 1):5.1f}%  {key}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
