"""A feature's evidence as a short plain-text card (terminals, SHIFT judges, tooltips)."""

from __future__ import annotations


def _snippet(ctx: dict, before: int, after: int) -> str:
    toks, p = ctx["tokens"], ctx["position"]
    left = "".join(toks[max(0, p - before) : p]).replace("\n", "⏎")
    right = "".join(toks[p + 1 : p + 1 + after]).replace("\n", "⏎")
    dots = ("…" if p - before > 0 else "", "…" if p + 1 + after < len(toks) else "")
    return f"{dots[0]}{left}[{toks[p].replace(chr(10), '⏎')}]{right}{dots[1]}"


def _tokens(items: list[dict], n: int) -> str:
    return ", ".join(str(i["token"]).strip() or repr(i["token"]) for i in items[:n])


def feature_card(
    record: dict,
    *,
    n_top: int = 5,
    n_quantile: int = 1,
    before: int = 10,
    after: int = 2,
    label: str | None = None,
    annotation: dict | None = None,
) -> str:
    """A short plain-text card of a feature's evidence (one ``sfc-dashboards/1`` feature record); ``annotation``
    (an ``sfc-annotations/1`` record) adds its label with status, author and reviewer."""
    lines = [
        f"{record['id']}  density {100 * record['density']:.2f}%  max {record['max']:.3g}  mean {record['mean']:.3g}"
    ]
    if annotation:
        who = annotation["author"] + (
            f", {annotation['status']} by {annotation['reviewer']}" if annotation.get("reviewer") else ""
        )
        lines.append(f"label: {annotation['label']}  [{annotation['status']}; {who}]")
    elif label:
        lines.append(f"label: {label}")
    if not record["top"]:
        lines.append("never fires on the corpus")
    else:
        lines.append("top contexts:")
        lines += [f"  {c['max']:7.3g}  {_snippet(c, before, after)}" for c in record["top"][:n_top]]
        if n_quantile and record["quantiles"]:
            lines.append("random contexts from lower quantiles:")
            for band in record["quantiles"][1:] or record["quantiles"]:
                lo, hi = band["quantile"]
                lines += [
                    f"  {c['max']:7.3g}  {_snippet(c, before, after)}  ({100 * lo:.0f}–{100 * hi:.0f}%)"
                    for c in band["contexts"][:n_quantile]
                ]
    if record["promoted"]:
        lines.append(f"promotes: {_tokens(record['promoted'], 6)}")
        lines.append(f"suppresses: {_tokens(record['suppressed'], 6)}")
    return "\n".join(lines)
