"""The Markdown tables of chapter 3 (computed by :mod:`deepinside.measures.evaluation`): top-k localisation error with bootstrap standard errors per folder, the maps x box rules grid, paired comparisons."""

from __future__ import annotations

from typing import Mapping, Sequence

from ..measures.evaluation import Comparison, Outcomes, bootstrap_se, compare_rows, concat_outcomes

__all__ = ["table_markdown", "grid_markdown", "comparisons_markdown", "results_markdown",
           "maxboxacc_markdown", "maxboxacc_comparisons_markdown", "failure_markdown"]


def table_markdown(table: Mapping[str, Mapping[str, Outcomes]], n_boot: int = 2000) -> str:
    """A Markdown table of :func:`localisation_table`: top-k localisation error ± its bootstrap
    standard error (percent) per folder and over all folders together."""
    if not table:
        raise ValueError("table_markdown() got an empty table")
    folders = list(next(iter(table.values())))
    k = next(iter(next(iter(table.values())).values())).topk
    head = [*folders, "together"] if len(folders) > 1 else folders
    lines = ["| method | " + " | ".join(f"{f}: top-{k} loc. error" for f in head) + " |",
             "|---|" + "---:|" * len(head)]
    for name, per in table.items():
        parts = [per[f] for f in folders]
        if len(folders) > 1:
            parts.append(concat_outcomes(*parts))
        cells = [f"{100 * (1 - o.lock.mean()):.1f} ± {100 * bootstrap_se(~o.lock, n_boot):.1f} %"
                 for o in parts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_markdown(table: Mapping[str, Mapping[str, Outcomes]], maps: Sequence[str],
                  boxes: Sequence[str], folders: Sequence[str | None] | None = None,
                  n_boot: int = 2000) -> str:
    """A Markdown maps x box rules table of the :func:`grid_rows` rows of a
    :func:`localisation_table`: one line per map; for each box rule, the top-k localisation error
    ± its bootstrap standard error (percent) per folder and on all folders together; **bold**: the
    best map of each column (lowest error).

    Args:
        folders: the folders to show (None in the list: all folders together); default all
            folders, then together.
    """
    if not table:
        raise ValueError("grid_markdown() got an empty table")
    have = list(next(iter(table.values())))
    if folders is None:
        cols = [*have, None] if len(have) > 1 else have
    else:
        cols = list(folders)
        unknown = [f for f in cols if f is not None and f not in have]
        if unknown or not cols:
            raise ValueError(f"folders {unknown or cols} not in the table; it has {have}")
    k = next(iter(next(iter(table.values())).values())).topk

    def pick(m: str, b: str, f: str | None) -> Outcomes:
        name = f"{m} / {b}"
        if name not in table:
            raise KeyError(f"no row {name!r}: build the rows with grid_rows()")
        return table[name][f] if f is not None else concat_outcomes(*table[name].values())

    err = {(m, b, f): 1 - pick(m, b, f).lock.mean() for m in maps for b in boxes for f in cols}
    best = {(b, f): min(err[(m, b, f)] for m in maps) for b in boxes for f in cols}
    head = [f"{b}: {f or 'together'}" for b in boxes for f in cols]
    lines = [f"| map (top-{k} loc. error, %) | " + " | ".join(head) + " |",
             "|---|" + "---:|" * len(head)]
    for m in maps:
        cells = []
        for b in boxes:
            for f in cols:
                o = pick(m, b, f)
                text = f"{100 * err[(m, b, f)]:.1f} ± {100 * bootstrap_se(~o.lock, n_boot):.1f}"
                cells.append(f"**{text}**" if err[(m, b, f)] == best[(b, f)] else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparisons_markdown(table: Mapping[str, Mapping[str, Outcomes]],
                         pairs: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of paired comparisons (:func:`compare_rows`), per folder and together:
    error of the first row minus the second, ± standard error, in points; **bold** where the
    difference exceeds 2 standard errors (cells kept short: the table fits a book's column)."""
    folders = list(next(iter(table.values())))
    cols = [*folders, None] if len(folders) > 1 else folders

    def cell(c: Comparison) -> str:
        text = f"{100 * c.diff:+.1f} ± {100 * c.se:.1f}"
        return f"**{text}**" if c.significant else text

    lines = ["| comparison (points; bold: beyond 2 s.e.) | "
             + " | ".join(f or "together" for f in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for a, b in pairs:
        lines.append(f"| {a} − {b} | "
                     + " | ".join(cell(compare_rows(table, a, b, f)) for f in cols) + " |")
    return "\n".join(lines)


def results_markdown(
    results: Mapping[str, Mapping[str, float | int]],
    topk: int = 5,
    reference: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> str:
    """A Markdown table of localisation errors (percent): one row per result, then ``reference``
    rows (name -> (top-1, top-k) fractions or None, e.g. the paper's published numbers)."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    lines = [f"| method | top-1 loc. error | top-{topk} loc. error |", "|---|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {pct(r['top1_loc_err'])} | {pct(r[f'top{topk}_loc_err'])} |")
    for name, (e1, ek) in (reference or {}).items():
        lines.append(f"| {name} | {pct(e1)} | {pct(ek)} |")
    return "\n".join(lines)


def maxboxacc_markdown(table: Mapping[str, Mapping[str, dict]], n_boot: int = 1000) -> str:
    """A Markdown table of :func:`deepinside.measures.maxboxacc.maxboxacc_table`: per map and
    folder, MaxBoxAccV2 (%) ± its bootstrap standard error and, in brackets, MaxBoxAcc at IoU
    0.3/0.5/0.7; with two folders, also each folder's MaxBoxAccV2 at the thresholds (τ) chosen
    on the other."""
    from ..measures.maxboxacc import bootstrap_se_maxboxacc, transferred_thresholds

    if not table:
        raise ValueError("maxboxacc_markdown() got an empty table")
    folders = list(next(iter(table.values())))
    swap = len(folders) == 2
    head = list(folders)
    if swap:
        a, b = folders
        head += [f"{a}, τ of {b}", f"{b}, τ of {a}"]
    lines = ["| map | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for name, per in table.items():
        cells = []
        for f in folders:
            r = per[f]
            se = bootstrap_se_maxboxacc(r["hits"], n_boot)["maxboxacc_v2"]
            ious = "/".join(f"{100 * v:.0f}" for v in r["per_iou"].values())
            cells.append(f"{100 * r['maxboxacc_v2']:.1f} ± {100 * se:.1f} ({ious})")
        if swap:
            cells += [f"{100 * transferred_thresholds(per[b], per[a]):.1f}",
                      f"{100 * transferred_thresholds(per[a], per[b]):.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def maxboxacc_comparisons_markdown(comparisons: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]]) -> str:
    """A Markdown table of :func:`deepinside.measures.maxboxacc.maxboxacc_comparisons`: MaxBoxAccV2
    of the first map minus the second, in points ± its paired bootstrap standard error, per
    folder; **bold**: beyond 2 standard errors."""
    if not comparisons:
        raise ValueError("maxboxacc_comparisons_markdown() got no comparisons")
    folders = list(next(iter(comparisons.values())))
    lines = ["| comparison | " + " | ".join(f"{f}: difference" for f in folders) + " |",
             "|---|" + "---:|" * len(folders)]
    for (a, b), per in comparisons.items():
        cells = []
        for f in folders:
            c = per[f]
            text = f"{100 * c['diff']:+.1f} ± {100 * c['se']:.1f}"
            cells.append(f"**{text}**" if c["significant"] else text)
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failure_markdown(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> str:
    """A Markdown table of :func:`deepinside.measures.evaluation.failure_counts` for several rows:
    one line per kind, one column per (row, folder): the number of images and their share."""
    if not counts:
        raise ValueError("failure_markdown() got no counts")
    cols = [(r, f) for r, per in counts.items() for f in per]
    kinds = list(next(iter(next(iter(counts.values())).values())))
    lines = ["| kind | " + " | ".join(f"{r}, {f}" for r, f in cols) + " |", "|---|" + "---:|" * len(cols)]
    for k in kinds:
        cells = []
        for r, f in cols:
            c = counts[r][f]
            cells.append(f"{c[k]} ({100 * c[k] / max(1, sum(c.values())):.0f} %)")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
