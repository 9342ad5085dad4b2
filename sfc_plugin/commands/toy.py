"""``sfc toy``: show the toy world's quality report, or rebuild it from a seed."""

from __future__ import annotations

import argparse

from ..errors import SFCError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "toy",
        help="the shipped toy world (tiny LM + SAEs): quality report, rebuild",
        description="The toy world shipped in the package: a word-level 3-layer model trained on a synthetic "
        "language, with SAELens-trained SAEs at every submodule. 'sfc toy' alone prints the report.",
    )
    p.set_defaults(func=cmd_info, path=None, json=False)
    sub = p.add_subparsers(dest="toy_command", metavar="{info,build}")

    info = sub.add_parser(
        "info",
        help="print the quality report as a table",
        description="Print the toy world's quality report (accuracy, SAE L0/FVU/dead features).",
    )
    info.add_argument("--path", default=None, metavar="DIR", help="artifacts directory (default: the shipped one)")
    info.add_argument("--json", action="store_true", help="print the raw report JSON")
    info.set_defaults(func=cmd_info)

    build = sub.add_parser(
        "build",
        help="regenerate the toy artifacts from a seed",
        description="Regenerate datasets, tokenizer, model, SAEs and report from a seed "
        "(full build: a few minutes on two CPU cores).",
    )
    build.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default ./sfc-toy; never inside the installed package)",
    )
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="build into a non-empty directory sfc did not write (its other files stay)",
    )
    build.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    build.add_argument("--reduced", action="store_true", help="a tiny one-layer build in seconds (for tests)")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    build.set_defaults(func=cmd_build)
    return p


def cmd_info(args) -> int:
    from ..files import strict_json
    from ..toy import report

    rep = report(getattr(args, "path", None))
    if getattr(args, "json", False):
        print(strict_json(rep, indent=1))
    else:
        print(format_report(rep))
    return 0


def cmd_build(args) -> int:
    from ..toy import DEFAULT_BUILD_DIR, build

    if args.seed < 0:
        raise SFCError(f"--seed must be non-negative, got {args.seed}")
    out = args.out if args.out is not None else DEFAULT_BUILD_DIR
    rep = build(out, seed=args.seed, reduced=args.reduced, verbose=not args.quiet, overwrite=args.overwrite)
    print(format_report(rep))
    print(
        f"\nartifacts written to {out} (use them with --model {out}/model --sae {out}/saes, or toy.load(path={str(out)!r}))"
    )
    return 0


def format_report(rep: dict) -> str:
    """The report as a readable plain-text table."""
    m = rep.get("model", {})
    lines = [
        f"sfc toy world  (seed {rep.get('seed')}{', reduced' if rep.get('reduced') else ''}; "
        f"built in {rep.get('build_seconds', float('nan')):.0f} s; "
        f"artifacts {rep.get('artifact_bytes', 0) / 1e6:.2f} MB)",
        f"model: {m.get('n_layers')} layers, d_model {m.get('d_model')}, {m.get('n_heads')} heads, "
        f"d_mlp {m.get('d_mlp')}, n_ctx {m.get('n_ctx')}, vocab {m.get('d_vocab')}, {m.get('n_params', 0):,} params",
        "",
        "agreement accuracy, test split (right verb's logit > wrong verb's; clean and patch prompts)",
        f"  {'condition':<12}{'pairs':>7}{'model':>9}{'all SAEs spliced, no error':>29}",
    ]
    acc, spliced, n = rep.get("accuracy", {}), rep.get("spliced_accuracy", {}), rep.get("n_test_pairs", {})
    for cond in acc:
        lines.append(f"  {cond:<12}{n.get(cond, ''):>7}{acc[cond]:>9.3f}{spliced.get(cond, float('nan')):>29.3f}")
    lines += [
        "",
        f"SAEs (on {rep.get('eval_tokens', '?')} held-out corpus tokens)",
        f"  {'hook':<28}{'d_in':>6}{'d_sae':>7}{'L0':>8}{'FVU':>8}{'dead':>7}",
    ]
    for hook, q in rep.get("saes", {}).items():
        lines.append(
            f"  {hook:<28}{q['d_in']:>6}{q['d_sae']:>7}{q['l0']:>8.2f}{q['fvu']:>8.3f}{q['dead_fraction']:>7.3f}"
        )
    return "\n".join(lines)
