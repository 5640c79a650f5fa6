#!/usr/bin/env python
"""Speed benchmarks of d2ext against the stock path, as ratios measured in one run.

    python tools/benchmark.py --list
    python tools/benchmark.py mask_assembly paste_masks --device cpu
    python tools/benchmark.py --all --quick --markdown bench.md

Record the printed table (with the command, machine and date) in docs/benchmarks.md. A case that
raises is reported on stderr and the others still run; the exit status is then 1.
"""

import argparse
import datetime
import platform
import sys
import traceback

import torch


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="benchmark cases to run (see --list)")
    parser.add_argument("--all", action="store_true", help="run every case")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions / smaller sizes")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep)")
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    args = parser.parse_args(argv)

    from benchmarks import load_all_cases  # tools/benchmarks, next to this script

    cases = load_all_cases()
    if args.list:
        for name, fn in sorted(cases.items()):
            print(f"{name:24s} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    names = sorted(cases) if args.all else args.names
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    unknown = [n for n in names if n not in cases]
    if unknown or not names:
        parser.error(f"unknown or no cases {unknown}; available: {sorted(cases)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    on_gpu = args.device.startswith("cuda")
    cpu_name = platform.processor() or platform.machine()
    device_name = torch.cuda.get_device_name(args.device) if on_gpu else cpu_name
    torch_version = torch.__version__ + (f" (CUDA {torch.version.cuda})" if on_gpu else "")
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"device: {device_name}, torch {torch_version}, threads {torch.get_num_threads()}, "
        f"{datetime.date.today().isoformat()}\ncommand: python tools/benchmark.py {command}\n"
    )
    lines = [
        "| case | measured | anchor | anchor ms | ours ms | speed-up | target | extra |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    failed = []
    for name in names:
        try:
            rows = cases[name](device=args.device, quick=args.quick)
        except Exception:  # one broken case must not cost the other rows of a run (a lent GPU's)
            traceback.print_exc()
            failed.append(name)
            continue
        for row in rows:
            extra = ", ".join(f"{k}: {v}" for k, v in row.extra.items()).replace("|", "\\|")
            target = f"≥{row.target:g}x" if row.target else ""
            lines.append(
                f"| {name} | {row.name} | {row.anchor} | {row.anchor_s * 1e3:.2f} | {row.ours_s * 1e3:.2f} "
                f"| {row.speedup:.2f}x | {target} | {extra} |"
            )
            print(lines[-1], flush=True)
    text = header + "\n" + "\n".join(lines) + "\n"
    if failed:
        text += f"\nfailed cases: {', '.join(failed)} (tracebacks on stderr)\n"
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
