#!/usr/bin/env python
"""Speed benchmarks of d2ext against the stock path, as ratios measured in one run.

    python tools/benchmark.py --list
    python tools/benchmark.py mask_assembly paste_masks --device cpu
    python tools/benchmark.py --all --quick --markdown bench.md

Record the printed table (with the command, machine and date) in docs/benchmarks.md.
"""
import argparse
import datetime
import platform
import sys

import torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmark cases to run (see --list)")
    parser.add_argument("--all", action="store_true", help="run every case")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions / smaller sizes")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep)")
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    args = parser.parse_args(argv)

    from d2ext.benchmarks import load_all_cases

    cases = load_all_cases()
    if args.list:
        for name, fn in sorted(cases.items()):
            print(f"{name:24s} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    names = sorted(cases) if args.all else args.names
    unknown = [n for n in names if n not in cases]
    if unknown or not names:
        parser.error(f"unknown or no cases {unknown}; available: {sorted(cases)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    header = (
        f"device: {torch.cuda.get_device_name() if args.device.startswith('cuda') else platform.processor() or platform.machine()}"
        f", torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{datetime.date.today().isoformat()}\ncommand: python tools/benchmark.py {' '.join(sys.argv[1:] if argv is None else argv)}\n"
    )
    lines = [
        "| case | measured | anchor | anchor ms | ours ms | speed-up | target | extra |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for name in names:
        for row in cases[name](device=args.device, quick=args.quick):
            extra = ", ".join(f"{k}: {v}" for k, v in row.extra.items()).replace("|", "\\|")
            target = f"≥{row.target:g}x" if row.target else ""
            lines.append(
                f"| {name} | {row.name} | {row.anchor} | {row.anchor_s * 1e3:.2f} | {row.ours_s * 1e3:.2f} "
                f"| {row.speedup:.2f}x | {target} | {extra} |"
            )
            print(lines[-1], flush=True)
    text = header + "\n" + "\n".join(lines) + "\n"
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
