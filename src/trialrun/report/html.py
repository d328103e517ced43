"""A `ReportData` as one self-contained HTML page: inline CSS, inline SVG charts, a few
lines of inline JavaScript for the trial table (search, status filter, rows opening their
details). Nothing is fetched: the page opens offline. Every text from the run (model
output, prompts, item fields, config values, error messages) is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from trialrun.analysis import StatsReport
from trialrun.report.charts import charts, comparison_label, group_label, side_label
from trialrun.report.data import ReportData
from trialrun.report.trials import TrialRow

CSS = """
body{font:14px system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#222}
h1{font-size:20px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ccc}
h3{font-size:15px}nav a{margin-right:12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right}
.note{color:#555}.warn{color:#a40}svg.chart{display:block;margin:10px 0;max-width:100%;height:auto}
pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;font-size:12px}
#trials tr.t{cursor:pointer}#trials tr.t:hover{background:#f0f6ff}#trials tr.d>td{background:#fafafa}
.msg{border-left:3px solid #ccc;padding:2px 8px;margin:4px 0}.msg.assistant{border-color:#1f77b4}
.msg.system{border-color:#999}.msg.error{border-color:#d62728}.meta{color:#666;font-size:12px}
"""

SCRIPT = """
(function(){
  var rows=[].slice.call(document.querySelectorAll('#trials tr.t'));
  var q=document.getElementById('q'), st=document.getElementById('status');
  var shown=document.getElementById('shown');
  function apply(){
    var text=q.value.toLowerCase(), s=st.value, n=0;
    rows.forEach(function(r){
      var ok=(!text||r.getAttribute('data-s').indexOf(text)>=0)&&(!s||r.getAttribute('data-st')===s);
      r.hidden=!ok; if(!ok){r.nextElementSibling.hidden=true;} else {n++;}
    });
    shown.textContent=n+' shown';
  }
  rows.forEach(function(r){r.addEventListener('click',function(){
    var d=r.nextElementSibling; d.hidden=!d.hidden;});});
  q.addEventListener('input',apply); st.addEventListener('change',apply); apply();
})();
"""

TRIAL_COLUMNS = ("item", "model", "cell", "repeat", "status", "scores", "verdicts", "answer")


SECTIONS = {
    "overview": "Overview",
    "stats": "Rates and comparisons",
    "judges": "Judges and agreement",
    "scores": "Scores",
    "usage": "Tokens, cost, latency, errors",
    "trials": "Trials",
    "provenance": "Provenance",
}
"""The report's sections by key, in page order (the dashboard shows some of them)."""


def sections(data: ReportData, keys: Sequence[str] = tuple(SECTIONS)) -> list[tuple[str, str, str]]:
    """(key, title, HTML) of the named sections, in the order asked."""
    makers = {
        "overview": _overview, "stats": _statistics, "judges": _judges, "scores": _scores,
        "usage": _usage, "trials": _trials, "provenance": _provenance,
    }  # fmt: skip
    return [(key, SECTIONS[key], makers[key](data)) for key in keys]


def render(data: ReportData) -> str:
    """The whole page."""
    sections_ = sections(data)
    nav = "".join(f"<a href='#{key}'>{escape(title)}</a>" for key, title, _ in sections_)
    body = "".join(f"<h2 id='{key}'>{escape(t)}</h2>{html}" for key, t, html in sections_)
    title = f"trialrun report: {data.run_id}"
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1><nav>{nav}</nav>{body}"
        f"<script>{SCRIPT}</script></body></html>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; numbers right-aligned, every cell escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(cell) for cell in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(cell: Any) -> str:
    if isinstance(cell, bool) or cell is None:
        return f"<td>{escape('-' if cell is None else str(cell))}</td>"
    if isinstance(cell, int):
        return f"<td class=n>{cell:,}</td>"
    if isinstance(cell, float):
        return f"<td class=n>{cell:.4g}</td>"
    return f"<td>{escape(str(cell))}</td>"


def _p(text: str, cls: str = "note") -> str:
    return f"<p class={cls}>{escape(text)}</p>"


def _overview(data: ReportData) -> str:
    counts = data.counts
    experiment = data.experiment
    facts = [
        ("run", data.run_id), ("experiment", experiment.name),
        ("models", ", ".join(m.label for m in experiment.models)),
        ("grid", ", ".join(f"{k}: {len(v)} values" for k, v in experiment.grid.items()) or "none"),
        ("trials", f"{sum(counts.values()):,}: {counts['done']:,} done, {counts['failed']:,} "
                   f"failed, {counts['pending'] + counts['running']:,} not finished"),
        ("mode", experiment.mode), ("created", str(data.manifest.get("created_at", "?"))),
    ]  # fmt: skip
    rows = [
        (r["model"], _grid_text(r["grid"]), r["done"], r["failed"], r["tokens"],
         r["mean_latency_s"], _cost(r["cost_usd"], r["cost_unknown"]), r["cache_hits"])
        for r in data.summary
    ]  # fmt: skip
    summary = table(("model", "cell", "done", "failed", "tokens", "latency/trial (s)", "cost",
                     "cache hits"), rows)  # fmt: skip
    return table(("", ""), facts, "facts") + summary


def _grid_text(grid: Any) -> str:
    value = json.loads(grid) if isinstance(grid, str) else grid
    return ", ".join(f"{k}={v}" for k, v in (value or {}).items()) or "-"


def _cost(known: float | None, unknown: int) -> str:
    if not unknown:
        return f"${known or 0.0:,.4f}"
    return "unknown" if known is None else f"${known:,.4f} + {unknown:,} unknown"


def _statistics(data: ReportData) -> str:
    parts = [_p(note, "warn") for note in data.stats_notes]
    for report in data.stats:
        parts.append(f"<h3>{escape(report.metric)}</h3>")
        parts += charts(report, data.options.fdr)
        parts.append(_groups_table(report))
        if report.comparisons:
            parts.append(_comparisons_table(report, data.options.fdr))
        parts += [_p(f"note: {note}") for note in report.notes]
    return "".join(parts)


def _groups_table(report: StatsReport) -> str:
    what = "mean" if report.kind == "numeric" else "rate"
    rows = [
        (group_label(g), g.n, g.missing, g.successes, g.rate, _ci(g.ci_low, g.ci_high),
         g.ci_method)
        for g in report.groups
    ]  # fmt: skip
    headers = ("group", "n", "missing", "successes", what, "95% CI", "CI method")
    return table(headers, rows, "groups")


def _comparisons_table(report: StatsReport, fdr: float) -> str:
    rows = [
        (side_label(c.a), side_label(c.b), c.n_pairs, c.a_only, c.b_only, c.diff,
         _ci(c.diff_ci_low, c.diff_ci_high), c.p_value, f"{c.q_value:.3g}"
         + (" *" if c.q_value <= fdr else ""), c.cohens_h, c.test)
        for c in report.comparisons
    ]  # fmt: skip
    headers = ("a", "b", "pairs", "a only", "b only", "diff", "95% CI", "p", "q", "Cohen's h",
               "test")  # fmt: skip
    caption = _p(f"paired comparisons ({report.compare}); {report.q_method}; * marks q ≤ "
                 f"{fdr:g}. Labels: {', '.join(comparison_label(c) for c in report.comparisons[:3])}"
                 f"{' …' if len(report.comparisons) > 3 else ''}")  # fmt: skip
    return table(headers, rows, "comparisons") + caption


def _ci(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def _judges(data: ReportData) -> str:
    if not data.judges:
        parts = [_p("no judges in this run")]
    else:
        rows = [
            (j["name"], j["model"], j["when"], j["verdicts"], j["errors"],
             ", ".join(f"{k} {n}" for k, n in sorted(j["error_kinds"].items())) or "-",
             j["to_judge"], j["calls"], _cost(j["cost_usd"], j["cost_unknown"]))
            for j in data.judges
        ]  # fmt: skip
        parts = [table(("judge", "model", "when", "verdicts", "errors", "errors by kind",
                        "left to judge", "calls", "cost"), rows, "judges")]  # fmt: skip
    parts.append("<h3>Agreement</h3>")
    found = data.agreement
    if found is None:
        parts.append(_p(data.agreement_note))
        return "".join(parts)
    pairs = [
        (p.field, p.a, p.b, p.n, p.percent_agreement, p.kappa, _ci(p.kappa_low, p.kappa_high))
        for p in found.pairs
    ]
    parts.append(table(("field", "rater a", "rater b", "n", "agreement", "Cohen's kappa",
                        "95% CI"), pairs, "agreement"))  # fmt: skip
    accuracy = [
        (j.field, j.judge, j.reference, j.n, j.sensitivity, j.specificity, j.judged_rate,
         j.corrected_rate, _ci(j.corrected_low, j.corrected_high))
        for j in found.judges
    ]  # fmt: skip
    if accuracy:
        parts.append(table(("field", "judge", "against", "n", "sensitivity", "specificity",
                            "judged rate", "corrected rate", "95% CI"), accuracy))  # fmt: skip
    return "".join(parts)


def _scores(data: ReportData) -> str:
    if not data.scores:
        return _p("no scores in this run")
    rows = [
        (s.name, s.true, s.false, s.numbers, s.null,
         "; ".join(f"{reason}: {n:,}" for reason, n in s.reasons.most_common(5)) or "-")
        for s in data.scores.values()
    ]  # fmt: skip
    return table(("score", "true", "false", "numbers", "null", "why null (top 5)"), rows, "scores")


def _usage(data: ReportData) -> str:
    rows = [
        (u.model, u.done, u.failed, u.input_tokens, u.output_tokens,
         _cost(u.cost_usd if u.cost_unknown < u.done + u.failed else None, u.cost_unknown),
         _mean(u.latencies), u.latency(0.5), u.latency(0.95), u.retries, u.cache_hits)
        for u in data.usage.values()
    ]  # fmt: skip
    headers = ("model", "done", "failed", "input tokens", "output tokens", "cost",
               "latency mean (s)", "p50", "p95", "retries", "cache hits")  # fmt: skip
    errors = [
        (u.model, kind, n) for u in data.usage.values() for kind, n in u.errors.most_common(10)
    ]
    parts = [table(headers, rows, "usage"), "<h3>Failed trials by error</h3>"]
    parts.append(table(("model", "error", "trials"), errors, "errors") if errors
                 else _p("no failed trials"))  # fmt: skip
    return "".join(parts)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _trials(data: ReportData) -> str:
    sampler = data.trials
    rows = sampler.bounded()
    note = f"{len(rows):,} of {data.records:,} trials"
    if len(rows) < data.records:
        note += (
            f": an even sample (every {sampler.stride * 2**sampler.halved:,}th in plan order) "
            f"to keep this file small; `trialrun export` has them all"
        )
    controls = (
        "<p><input id=q type=search placeholder='search trials' size=40> "
        "<select id=status><option value=''>any status</option><option>done</option>"
        "<option>failed</option></select> <span id=shown></span></p>"
    )
    head = "".join(f"<th>{escape(c)}</th>" for c in TRIAL_COLUMNS)
    body = "".join(_trial_row(row) for row in rows)
    return (
        _p(note + ". Click a row for its conversation, scores and verdicts.")
        + controls
        + f"<table id=trials><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _trial_row(row: TrialRow) -> str:
    cells = "".join(f"<td>{escape(cell)}</td>" for cell in row.cells)
    status = escape(row.cells[4])
    return (
        f"<tr class=t data-st='{status}' data-s='{escape(row.search)}'>{cells}</tr>"
        f"<tr class=d hidden><td colspan={len(TRIAL_COLUMNS)}>{row.details}</td></tr>"
    )


def _provenance(data: ReportData) -> str:
    manifest = json.dumps(data.manifest, indent=2, ensure_ascii=False)
    return (
        "<h3>manifest.json</h3>"
        f"<pre>{escape(manifest)}</pre><h3>config.yaml</h3>"
        f"<pre>{escape(data.config_text or '(missing)')}</pre>"
    )
