"""The dashboard's pages as HTML: the runs under a folder, a run's live page (its state, batch
jobs, and the report's sections), and the record browser. Every text from a run is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from trialrun.report.html import CSS, table
from trialrun.view.live import Snapshot

VIEW_CSS = """
.bar{display:inline-block;width:160px;height:10px;background:#eee;vertical-align:middle}
.bar span{display:block;height:10px;background:#1f77b4}
.peek{border:1px solid #e0b070;background:#fff8e8;padding:6px 10px;margin:8px 0}
form.filters label{margin-right:10px}
"""

POLL_SCRIPT = """
(function(){
  var box=document.getElementById('live'), url=box.getAttribute('data-src');
  var seen=box.getAttribute('data-version');
  function tick(){
    fetch(url+'.json').then(function(r){return r.json();}).then(function(s){
      if(s.version===seen){return;}
      return fetch(url+'/live').then(function(r){return r.text();}).then(function(h){
        box.innerHTML=h; seen=s.version;});
    }).catch(function(){}).then(function(){setTimeout(tick,POLL_MS);});
  }
  setTimeout(tick,POLL_MS);
})();
"""

PEEKING_WARNING = (
    "These comparisons update as trials finish. Stopping the run when a difference looks "
    "significant inflates false positives: each look is another chance to see a difference "
    "that is not there. Fix the sample size first (`trialrun power`), or declare the "
    'stopping rule in advance as `gates:` in the config (docs/guide.md, "Budgets and '
    'early-stop gates"), which the run checks for you.'
)


def page(title: str, body: str, script: str = "") -> str:
    """A whole page: the report's styles and the dashboard's, a header linking home."""
    tail = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{CSS}{VIEW_CSS}</style></head><body><nav><a href='/'>all runs</a></nav>"
        f"<h1>{escape(title)}</h1>{body}{tail}</body></html>"
    )


def run_link(run_id: str, suffix: str = "") -> str:
    return f"/runs/{quote(run_id, safe='')}{suffix}"


def state_of(status: dict[str, Any]) -> str:
    """running, stopped by a gate or the budget, finished, or stopped (resumable)."""
    counts = status["counts"]
    if status["running"]:
        return "running"
    if status.get("gate"):
        return "stopped by a gate"
    if counts["pending"] + counts["running"] == 0:
        return "finished"
    return "stopped"


def progress(status: dict[str, Any]) -> str:
    counts, total = status["counts"], status["total"] or 1
    finished = counts["done"] + counts["failed"]
    width = 100.0 * finished / total
    return (
        f"<span class=bar><span style='width:{width:.1f}%'></span></span> "
        f"{finished:,}/{status['total']:,} ({counts['failed']:,} failed)"
    )


def spend(status: dict[str, Any]) -> str:
    budget = status.get("budget")
    if budget:
        return f"${budget['spent_usd']:,.4f} of ${budget['max_usd']:,.2f}"
    found = status.get("spend")
    if found is None:
        return "(counting…)"
    known = f"${found['cost_usd'] or 0.0:,.4f}"
    return known + (f" + {found['cost_unknown']:,} unpriced" if found["cost_unknown"] else "")


def eta(status: dict[str, Any]) -> str:
    seconds = status.get("eta_s")
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def runs_page(base: str, rows: Sequence[tuple[str, dict[str, Any] | str]]) -> str:
    """Each run under the folder: state, progress, spend, ETA (or why it cannot be read)."""
    cells = []
    for run_id, status in reversed(rows):
        link = f"<a href='{escape(run_link(run_id))}'>{escape(run_id)}</a>"
        if isinstance(status, str):
            cells.append(f"<tr><td>{link}</td><td colspan=5 class=warn>{escape(status)}</td></tr>")
            continue
        cells.append(
            f"<tr><td>{link}</td><td>{escape(state_of(status))}</td><td>{progress(status)}</td>"
            f"<td>{escape(spend(status))}</td><td>{status['rate_per_s']:.2f}/s</td>"
            f"<td>{escape(eta(status))}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("run", "state", "progress", "spend", "rate", "ETA"))
    body = (
        f"<table id=runs><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>"
        if cells
        else "<p class=note>no runs here yet: start one with `trialrun run CONFIG`</p>"
    )
    note = f"<p class=note>runs under {escape(base)}, newest first; reload for news</p>"
    return page("trialrun runs", note + body)


def run_page(run_id: str, fragment: str, version: str, poll_ms: int) -> str:
    """A run's page: its live fragment, refreshed in place when the run's JSON changes."""
    links = (
        f"<p><a href='{escape(run_link(run_id, '/records'))}'>browse records</a> · "
        f"<a href='{escape(run_link(run_id, '.json'))}'>status as JSON</a></p>"
    )
    box = (
        f"<div id=live data-src='{escape(run_link(run_id))}' data-version='{escape(version)}'>"
        f"{fragment}</div>"
    )
    return page(f"run {run_id}", links + box, f"var POLL_MS={poll_ms};" + POLL_SCRIPT)


def live_fragment(
    status: dict[str, Any], snapshot: Snapshot | None, gates: Sequence[str], compares: bool
) -> str:
    """What refreshes: state, progress, spend, ETA, batch jobs, events, then the report's
    sections as of the last snapshot (with the peeking warning above live comparisons)."""
    parts = [_facts(status), _batches(status["batches"]), _events(status["events"])]
    if snapshot is None:
        parts.append("<p class=note>computing statistics… (this page updates by itself)</p>")
        return "".join(parts)
    age = f"statistics over {snapshot.records:,} records (computed in {snapshot.compute_s:.2f} s)"
    parts.append(f"<p class=note id=stats-age>{escape(age)}</p>")
    if compares and state_of(status) != "finished":
        named = f" This run's gates: {', '.join(gates)}." if gates else ""
        parts.append(f"<p class=peek id=peeking>{escape(PEEKING_WARNING + named)}</p>")
    parts.append(snapshot.value)
    return "".join(parts)


def _facts(status: dict[str, Any]) -> str:
    rows = [
        ("state", escape(state_of(status))),
        ("progress", progress(status)),
        ("by state", escape(", ".join(f"{k} {v:,}" for k, v in status["counts"].items()))),
        ("spend", escape(spend(status))),
        ("rate", f"{status['rate_per_s']:.2f} trials/s (last minute)"),
        ("ETA", escape(eta(status))),
        ("mode", escape(str(status["mode"]))),
    ]
    if status.get("gate"):
        rows.append(("gate", escape(json.dumps(status["gate"], ensure_ascii=False))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class=facts id=facts>{body}</table>"


BATCH_COLUMNS = ("tag", "model", "stage", "state", "provider_state", "requests", "counts",
                 "batch_id", "created_at", "updated_at", "note")  # fmt: skip


def _batches(batches: Sequence[dict[str, Any]]) -> str:
    if not batches:
        return ""
    rows = [
        [json.dumps(b.get(c)) if c == "counts" else b.get(c) for c in BATCH_COLUMNS]
        for b in batches
    ]
    return "<h2 id=batches>Batch jobs</h2>" + table(BATCH_COLUMNS, rows, "batches")


def _events(events: Sequence[tuple[str, str, str]]) -> str:
    if not events:
        return ""
    return "<h2 id=events>Recent events</h2>" + table(("at", "kind", "detail"), events, "events")


def records_page(
    run_id: str, form: str, rows: str, shown: int, next_query: dict[str, str] | None
) -> str:
    """The record browser: the filter form, one page of trials, a link to the next."""
    more = ""
    if next_query is not None:
        href = run_link(run_id, "/records?" + urlencode(next_query))
        more = f"<p><a id=next href='{escape(href)}'>next page</a></p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("item", "model", "cell", "repeat", "status", "scores", "verdicts", "answer")
    )
    back = f"<p><a href='{escape(run_link(run_id))}'>back to the run</a></p>"
    table_html = (
        f"<p class=note>{shown:,} records on this page; click a row for its conversation</p>"
        f"<table id=trials><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )
    script = (
        "[].slice.call(document.querySelectorAll('#trials tr.t')).forEach(function(r){"
        "r.addEventListener('click',function(){var d=r.nextElementSibling;d.hidden=!d.hidden;});});"
    )
    return page(f"records of {run_id}", back + form + table_html + more, script)


def select(name: str, options: Sequence[tuple[str, str]], chosen: str) -> str:
    """A `<select>` with an empty `any` choice; values and labels escaped."""
    items = ["<option value=''>any</option>"] + [
        f"<option value='{escape(value)}'{' selected' if value == chosen else ''}>"
        f"{escape(label)}</option>"
        for value, label in options
    ]
    return f"<label>{escape(name)} <select name='{escape(name)}'>{''.join(items)}</select></label>"
