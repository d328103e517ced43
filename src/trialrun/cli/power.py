"""`trialrun power`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import click
from rich.table import Table

from trialrun import api, power
from trialrun.cli.common import runs_dir_option, stdout
from trialrun.errors import UsageError
from trialrun.estimate import estimate

UNIT = "a unit is one item × repeat, run in every model × grid cell"


def _budgets(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        found = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--budget '{text}': give amounts in USD, e.g. 20,50,300") from None
    if not found or any(b <= 0 for b in found):
        raise UsageError(f"--budget '{text}': give positive amounts in USD, e.g. 20,50,300")
    return found


def _config_cost(config: str) -> float:
    """The plan's cost of one unit: its total (batch discount when mode is batch) over
    items × repeats."""
    prepared = api.load(config, need_keys=False)
    planned = estimate(prepared)
    if planned.unpriced:
        raise UsageError(f"{config}: no price for {', '.join(planned.unpriced)}; add prices:")
    total = planned.total(batch=prepared.experiment.mode == "batch")
    units = len(prepared.dataset) * prepared.experiment.repeats
    if total <= 0:
        raise UsageError(f"{config}: the plan costs nothing (mock models); give --cost-per-unit")
    return total / units


@click.command("power")
@click.option("--rate", type=click.FloatRange(0, 1), help="Expected rate of the metric.")
@click.option(
    "--discordance",
    type=click.FloatRange(0, 1, min_open=True),
    help="Expected fraction of discordant pairs (one side right, the other wrong).",
)
@click.option(
    "--effect",
    type=click.FloatRange(0, 1, min_open=True),
    help="Paired difference of rates to detect (default: the pilot's observed one).",
)
@click.option("--n", "n", type=click.IntRange(min=1), help="Units available: MDE and CI at N.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Two-sided significance level.")  # fmt: skip
@click.option("--power", "target", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.8, show_default=True, help="Power wanted.")  # fmt: skip
@click.option(
    "--pilot", metavar="RUN", help="Estimate rate, discordance, effect and cost from a run."
)
@click.option("--metric", metavar="M", help="The pilot's metric (binary; as for stats).")
@click.option("--compare", default="model", show_default=True, metavar="FIELD",
              help="What the pilot's pairs compare: model or grid.NAME.")  # fmt: skip
@click.option("--budget", metavar="USD,...", help="Budgets for the frontier, e.g. 20,50,300.")
@click.option("--config", metavar="CONFIG", help="Cost a unit by this config's plan estimate.")
@click.option("--cost-per-unit", type=click.FloatRange(0, min_open=True),
              help="Cost of a unit in USD, instead of a pilot's or a config's.")  # fmt: skip
@click.option("--item-cost", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Cost of a new item beyond its samples (labelling, writing), for repeats.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@runs_dir_option
def command(**options: Any) -> None:
    """Sample size, detectable difference and CI width, and the budget frontier.

    N to detect a paired difference (--effect) with McNemar's test at --alpha and
    --power (Connor 1987), from an expected --rate and --discordance or from a --pilot
    run; at --n: the minimum detectable difference and the CI half-widths. --budget with
    a pilot (its measured cost), a --config (the plan's estimate, batch discount when
    mode is batch) or --cost-per-unit prints budget → N → CI half-width → detectable
    difference. A pilot with repeats also gets the repeats per item that buy the
    narrowest CI for the money (two-stage sampling). A unit is one item × repeat, run in
    every model × grid cell.

    \b
    Examples:
      trialrun power --rate 0.7 --discordance 0.2 --effect 0.05
      trialrun power --pilot RUN --budget 20,50,300
      trialrun power --config exp.yaml --rate 0.7 --discordance 0.2 --budget 20,50,300
    """
    result = _analyse(options)
    console = stdout()
    if options["as_json"]:
        console.out(json.dumps(result, indent=2, allow_nan=False), highlight=False)
    else:
        _print(console, result)


def _analyse(o: dict[str, Any]) -> dict[str, Any]:
    pilot = None
    if o["pilot"]:
        pilot = api.read_pilot(api.open_run(o["pilot"], o["runs_dir"]), o["metric"], o["compare"])
    rate = o["rate"] if o["rate"] is not None else (pilot.rate if pilot else None)
    discordance = o["discordance"] or (pilot.discordance if pilot else None)
    effect = o["effect"] or (pilot.effect if pilot else None)
    if rate is None and discordance is None:
        raise UsageError("give --rate and --discordance, or a --pilot run to estimate them")
    out: dict[str, Any] = {
        "rate": rate, "discordance": discordance, "effect": effect, "alpha": o["alpha"],
        "power": o["target"], "unit": UNIT, "pilot": asdict(pilot) if pilot else None,
    }  # fmt: skip
    try:
        out.update(_numbers(o, rate, discordance, effect, pilot))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out


def _numbers(
    o: dict[str, Any],
    rate: float | None,
    discordance: float | None,
    effect: float | None,
    pilot: api.Pilot | None,
) -> dict[str, Any]:
    alpha, target, n = o["alpha"], o["target"], o["n"]
    out: dict[str, Any] = {"n_needed": None, "at_n": None, "frontier": None, "repeats": None}
    if discordance is not None and effect is not None:
        out["n_needed"] = power.mcnemar_sample_size(discordance, effect, alpha=alpha, power=target)
    if n is not None:
        out["at_n"] = {
            "n": n,
            "detectable": power.mcnemar_mde(n, discordance, alpha=alpha, power=target)
            if discordance
            else None,
            "rate_half_width": power.wilson_half_width(rate, n) if rate is not None else None,
            "diff_half_width": power.paired_half_width(n, discordance) if discordance else None,
        }
    budgets = _budgets(o["budget"])
    if budgets:
        cost, source = _unit_cost(o, pilot)
        if rate is None:
            raise UsageError("the frontier needs --rate (or a --pilot)")
        rows = power.frontier(
            budgets, cost, rate=rate, discordance=discordance, alpha=alpha, power=target
        )
        out["frontier"] = {
            "cost_per_unit": cost,
            "cost_from": source,
            "rows": [asdict(r) for r in rows],
        }
        if pilot is not None and pilot.components is not None:
            out["repeats"] = _repeats(pilot, budgets, cost, o["item_cost"])
    return out


def _unit_cost(o: dict[str, Any], pilot: api.Pilot | None) -> tuple[float, str]:
    if o["cost_per_unit"]:
        return float(o["cost_per_unit"]), "--cost-per-unit"
    if o["config"]:
        return _config_cost(o["config"]), f"{o['config']}: the plan's estimate"
    if pilot is not None:
        if pilot.cost_per_unit is None:
            raise UsageError(
                f"{pilot.run_id}: its records cost nothing (a mock run?); give "
                "--cost-per-unit or --config"
            )
        return pilot.cost_per_unit, f"{pilot.run_id}: measured"
    raise UsageError("--budget needs a cost: --pilot RUN, --config CONFIG or --cost-per-unit")


def _repeats(
    pilot: api.Pilot, budgets: list[float], cost: float, item_cost: float
) -> dict[str, Any]:
    components = pilot.components
    assert components is not None
    per_sample = cost  # a unit's cost is one sample of the item in every cell
    plans = [
        asdict(power.optimal_repeats(components, b, cost_sample=per_sample, cost_item=item_cost))
        for b in budgets
    ]
    for plan in plans:
        if math.isinf(plan["unconstrained"]):
            plan["unconstrained"] = None
    return {
        "between": components.between, "within": components.within, "icc": components.icc,
        "pilot_repeats": components.repeats,
        "design_effect": components.design_effect(components.repeats),
        "item_cost": item_cost, "plans": dict(zip([str(b) for b in budgets], plans, strict=True)),
    }  # fmt: skip


def _print(console: Any, r: dict[str, Any]) -> None:
    def f(x: float | None, digits: int = 4) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    source = f" (from pilot {r['pilot']['run_id']})" if r["pilot"] else ""
    console.print(
        f"rate {f(r['rate'])}, discordant pairs {f(r['discordance'])}, effect {f(r['effect'])}"
        f"{source}; alpha {r['alpha']:g}, power {r['power']:g}; {r['unit']}"
    )
    if r["n_needed"] is not None:
        console.print(
            f"N needed to detect a paired difference of {f(r['effect'])}: {r['n_needed']:,} "
            "units (McNemar, Connor 1987 normal approximation)"
        )
    if r["at_n"]:
        a = r["at_n"]
        console.print(
            f"at N = {a['n']:,}: detectable difference {f(a['detectable'])}, "
            f"rate CI ±{f(a['rate_half_width'])} (Wilson), "
            f"paired difference CI ±{f(a['diff_half_width'])} (normal)"
        )
    if r["frontier"]:
        fr = r["frontier"]
        table = Table("budget USD", "N units", "rate CI ±", "diff CI ±", "detectable diff",
                      title=f"budget frontier (${fr['cost_per_unit']:.4g} a unit, {fr['cost_from']})")  # fmt: skip
        for row in fr["rows"]:
            table.add_row(f"{row['budget']:g}", f"{row['n']:,}", f(row["rate_half_width"]),
                          f(row["diff_half_width"]), f(row["detectable"]))  # fmt: skip
        console.print(table)
    if r["repeats"]:
        _print_repeats(console, r["repeats"], f)


def _print_repeats(console: Any, rep: dict[str, Any], f: Any) -> None:
    console.print(
        f"variance components: between items {f(rep['between'], 5)}, within {f(rep['within'], 5)}, "
        f"ICC {f(rep['icc'], 3)}; the pilot's {rep['pilot_repeats']:.3g} repeats have a design "
        f"effect of {f(rep['design_effect'], 3)} (1 + (k - 1) ICC)"
    )
    table = Table("budget USD", "repeats k", "items", "mean CI ±",
                  title=f"repeats per item (two-stage sampling; a new item costs "
                  f"${rep['item_cost']:g} beyond its samples)")  # fmt: skip
    for budget, plan in rep["plans"].items():
        table.add_row(budget, str(plan["repeats"]), f"{plan['items']:,}", f(plan["half_width"]))
    console.print(table)
