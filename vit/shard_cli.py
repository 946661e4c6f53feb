"""``torchrun ... -m vit.shard_cli``: a seed study sharded over ranks (:mod:`vit.shard`), with the
options of ``cffdyn vit study`` plus the shard options.  A CLI module on top: it imports
:mod:`vit.study_cli` and :mod:`vit.shard`; neither imports it."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import UserError, guarded
from vit.shard import merge_study, run_shard, run_study_torchrun, under_torchrun
from vit.study import run_study
from vit.study_cli import build_parser, config_from_args

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``torchrun ... -m vit.shard`` with the options of ``cffdyn vit study`` plus shard options."""
    p = build_parser(prog or "python -m vit.shard")
    g = p.add_argument_group("sharding (torchrun: RANK/WORLD_SIZE from the environment)")
    g.add_argument("--rank", type=int, default=None,
                   help="this shard's rank without torch.distributed (needs --world; trains the shard, no merge)")
    g.add_argument("--world", type=int, default=None, help="number of shards without torch.distributed")
    g.add_argument("--merge-only", action="store_true",
                   help="train nothing: build study.json/table from finished runs (error if any is missing)")
    g.add_argument("--barrier-timeout-h", type=float, default=72.0,
                   help="hours rank 0 waits at the barrier for the slowest shard under torchrun")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        cfg = config_from_args(args)
        out = Path(args.out)
        progress = not args.quiet
        if args.merge_only:
            res = merge_study(cfg, out, progress=progress)
        elif args.rank is not None or args.world is not None:
            if args.rank is None or args.world is None:
                raise ValueError("--rank and --world go together")
            run_shard(cfg, out, args.rank, args.world, progress=progress, run_progress=args.run_progress)
            return 0
        elif under_torchrun():
            res = run_study_torchrun(cfg, out, progress=progress, run_progress=args.run_progress,
                                     barrier_timeout_h=args.barrier_timeout_h)
            if res is None:
                return 0
        else:
            res = run_study(cfg, out, progress=progress, run_progress=args.run_progress)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    print(res["table"])
    print(f"\n{len(res['runs'])} runs; results: {out / 'study.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main, None, "python -m vit.shard_cli", resumable=True))
