"""Builds (or finds in the cache) the category bank for a config and prints where it is.

    python tools/make_bank.py --config configs/quickstart.yaml [bank.num_classes=1000 ...] [--rebuild]

A cache file is checked when read (format, settings, shapes and the content digest recorded when it was written):
one that fails is refused with one `error:` line naming it; --rebuild replaces it. A file written before digests
is used with a warning that it cannot be checked (--rebuild gives it one).
"""

from dr_fdsl.signals import entry, quiet_start

if __name__ == "__main__":  # before torch is imported: a Ctrl-C there ends in one line, not a traceback
    quiet_start()

import argparse
import sys
import time

from dr_fdsl.bank import bank_from_config, cache_path, cached_path
from dr_fdsl.cli import report
from dr_fdsl.config import add_config_args, load_config
from dr_fdsl.errors import DrFdslError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--rebuild", action="store_true", help="regenerate even when a cache file exists")
    args = parser.parse_intermixed_args(argv)  # overrides may stand on either side of options
    try:
        cfg = load_config(args.config, args.overrides)
        path = cache_path(cfg.bank) if args.rebuild else cached_path(cfg.bank)  # found under its earlier name
        cached = path.exists() and not args.rebuild
        start = time.perf_counter()
        bank = bank_from_config(cfg.bank, rebuild=args.rebuild, progress=True)
    except DrFdslError as err:
        return report(err)
    seconds = time.perf_counter() - start
    how = "read from cache" if cached else f"built from {bank.draws} draws"
    print(f"bank: {bank.num_classes} classes x {bank.num_points} points, {how} in {seconds:.1f} s")
    print(f"bank file: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main))
