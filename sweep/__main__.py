"""Command line: ``python -m sweep [run|report|tasks|search] CONFIG.toml`` from the pack folder."""

from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, load
from .prompts import PromptSetError

COMMANDS = ("run", "report", "tasks", "search")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")  # `python -m sweep config.toml` runs it
    parser = argparse.ArgumentParser(prog="python -m sweep",
                                     description="Noise Search scaling sweeps over ComfyUI servers, scheduled with Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the tasks not done yet, then write the table and plots")
    p_report = sub.add_parser("report", help="write table.md, table.csv and scaling.png from the rows on disk")
    p_tasks = sub.add_parser("tasks", help="list the sweep's tasks (and which are done)")
    for p in (p_run, p_report, p_tasks):
        p.add_argument("config", help="the sweep's TOML file")
    for p in (p_run, p_tasks):
        p.add_argument("--shard", metavar="I/N", help="only the tasks of shard I of N (e.g. a Slurm array task)")
    p_run.add_argument("--address", help="Ray cluster address (overrides [ray] address; default: a local Ray)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_run.add_argument("--no-report", action="store_true", help="skip the table and plots at the end")
    p_tasks.add_argument("--json", action="store_true", help="one JSON object per line")
    p_search = sub.add_parser("search", help="one search split over the servers (candidate ranges or islands), "
                                             "merged, its winner regenerated with stock nodes")
    p_search.add_argument("config", help="a sweep TOML file that names one search (one prompt, strategy, seed, "
                                         "budget and search verifier)")
    p_search.add_argument("--shards", type=int, default=None,
                          help="candidate ranges (random, early rejection) or islands (the other strategies); "
                               "default: one per server")
    p_search.add_argument("--address", help="Ray cluster address (overrides [ray] address; default: a local Ray)")
    p_search.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "search":
        return _search(args)

    from .tasks import parse_shard

    try:
        cfg = load(args.config)
        shard = parse_shard(getattr(args, "shard", None))
        if args.command == "tasks":
            return _tasks(cfg, shard, args.json)
        if args.command == "report":
            from .report import write_all

            write_all(cfg)
            return 0
        from .scheduler import SweepAborted, run

        try:
            code = run(cfg, shard=shard, address=args.address, progress=not args.no_progress)
        except SweepAborted as e:
            print(f"sweep: {e}", file=sys.stderr)
            return 1
        if code == 0 and not args.no_report:
            if shard is None:
                from .report import write_all

                write_all(cfg)
            else:
                print(f"shard {shard[0]}/{shard[1]} done; when every shard is, run: "
                      f"python -m sweep report {args.config}")
        return code
    except (ConfigError, PromptSetError, ValueError) as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 2


def _search(args) -> int:
    from .distributed import MergeError, SearchAborted, run

    try:
        cfg = load(args.config, require_eval=False)
        return run(cfg, shards=args.shards, address=args.address, progress=not args.no_progress)
    except SearchAborted as e:
        print(f"sweep search: {e}", file=sys.stderr)
        return 1
    except (ConfigError, PromptSetError, MergeError, ValueError) as e:
        print(f"sweep search: {e}", file=sys.stderr)
        return 2


def _tasks(cfg, shard, as_json: bool) -> int:
    from .results import read_rows
    from .tasks import all_tasks, shard_tasks

    rows, _ = read_rows(cfg.output)
    tasks = shard_tasks(all_tasks(cfg), shard)
    for t in tasks:
        if as_json:
            print(json.dumps({**t.describe(), "done": t.id in rows}))
        else:
            print(f"{t.id}  {'done' if t.id in rows else 'todo'}  {t.setting.key}  {t.prompt.id}  seed {t.seed}")
    sys.stdout.flush()
    print(f"{len(tasks)} tasks, {sum(t.id in rows for t in tasks)} done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
