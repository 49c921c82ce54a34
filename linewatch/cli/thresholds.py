"""``linewatch thresholds``: propose threshold changes from dispositions, and apply one as a new model version.

Proposals are never applied by themselves: ``propose`` prints what the dispositions say (the
rule is in :mod:`linewatch.feedback.thresholds`), and ``apply`` registers a new version of the
serving model with the changed threshold, on record with who did it, why and on what evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from linewatch.cli.common import ConfigOption, console, settings
from linewatch.cli.feedback_options import ActorOption, SinceOption, operator_name, parse_time

thresholds_app = typer.Typer(help="Threshold proposals from operators' dispositions; apply one as a new model "
                                  "version.", no_args_is_help=True)
CostRatioOption = Annotated[float, typer.Option(
    help="what one missed defect costs in false alarms, for when false alarms and defects overlap")]


def _proposals(database_url: str, *, asset: str | None, detector: str | None, since: str | None,
               cost_ratio: float) -> list:
    from linewatch.feedback.dispositions import threshold_evidence
    from linewatch.feedback.thresholds import propose_all
    from linewatch.storage.connection import connect

    with connect(database_url) as conn:
        evidence = threshold_evidence(conn, asset=asset, detector=detector, since=parse_time(since, "--since"))
    return propose_all(evidence, cost_ratio=cost_ratio)


@thresholds_app.command("propose")
def propose_cmd(
    asset: Annotated[str | None, typer.Option(help="only this asset")] = None,
    detector: Annotated[str | None, typer.Option(help="only this detector (e.g. robust_mahalanobis)")] = None,
    since: SinceOption = None,
    cost_ratio: CostRatioOption = 10.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every proposal as JSON here")] = None,
    config: ConfigOption = None,
) -> None:
    """Propose a threshold per detector and asset from the dispositions; changes nothing."""
    from rich.console import Console
    from rich.table import Table

    from linewatch.embedded.stack import Stack
    from linewatch.storage.migrations import migrate

    s = settings(config)
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        proposals = _proposals(stack.database_url, asset=asset, detector=detector, since=since, cost_ratio=cost_ratio)
    table = Table(title=f"{len(proposals)} threshold proposal(s) (calibrated scale: -log10 false-alarm rate)")
    for col in ("detector", "asset", "current", "proposed", "action", "false-alarm target", "false alarms",
                "true defects", "still raised", "missed", "warnings"):
        table.add_column(col)
    for p in proposals:
        table.add_row(p.detector, p.asset_id, f"{p.current_threshold:.2f}", f"{p.proposed_threshold:.2f}", p.action,
                      f"1 in {1 / p.target_far:,.0f}", str(p.n_false_alarms), str(p.n_true_defects),
                      str(p.false_alarms_still_raised), str(p.defects_missed), "; ".join(p.warnings))
    Console(width=220).print(table)
    if not proposals:
        console.print("no dispositions joined to scores yet: record some with `linewatch disposition`")
    if json_out is not None:
        json_out.write_text(json.dumps([p.to_dict() for p in proposals], indent=2))
        console.print(f"proposals written to {json_out}")


@thresholds_app.command("apply")
def apply_cmd(
    detector: Annotated[str, typer.Option(help="the detector whose threshold changes")],
    asset: Annotated[str, typer.Option(help="the asset it changes for (other assets keep theirs)")],
    threshold: Annotated[float | None, typer.Option(help="the new threshold (calibrated scale, e.g. 3.6)")] = None,
    from_proposal: Annotated[bool, typer.Option("--from-proposal", help="take the threshold `propose` gives "
                                                                        "now")] = False,
    shadow: Annotated[bool, typer.Option(help="register it as a shadow (challenger) version")] = False,
    modality: Annotated[str | None, typer.Option(help="spc, signals or frames, if the detector serves several")
                        ] = None,
    actor: ActorOption = None,
    reason: Annotated[str, typer.Option(help="why (default: the proposal's evidence)")] = "",
    cost_ratio: CostRatioOption = 10.0,
    config: ConfigOption = None,
) -> None:
    """Register a NEW model version with the threshold changed (the serving version stays on record)."""
    from linewatch.embedded.stack import Stack
    from linewatch.errors import ConfigError
    from linewatch.feedback.apply import apply_threshold
    from linewatch.storage.migrations import migrate

    if (threshold is None) == (not from_proposal):
        raise ConfigError("give the new threshold with --threshold T, or take the proposal with --from-proposal")
    s = settings(config)
    who = operator_name(actor)
    with Stack(s, need_broker=False) as stack:
        migrate(stack.database_url)
        proposals = _proposals(stack.database_url, asset=asset, detector=detector, since=None, cost_ratio=cost_ratio)
        proposal = proposals[0] if proposals else None
        if from_proposal:
            if proposal is None:
                raise ConfigError(f"no dispositions for {detector} on {asset}: nothing to propose from; see "
                                  "`linewatch thresholds propose`")
            if proposal.action != "raise":
                raise ConfigError(f"the proposal for {detector} on {asset} keeps {proposal.current_threshold:.2f} "
                                  f"({'; '.join(proposal.warnings) or 'no false alarm above it'}); nothing to apply")
            threshold = proposal.proposed_threshold
        assert threshold is not None
        for w in proposal.warnings if proposal else []:
            console.print(f"[yellow]note:[/] {w}")
        why = reason or (f"{proposal.n_false_alarms} false alarm(s), {proposal.n_true_defects} true defect(s) "
                         f"in dispositions" if proposal else "set by hand")
        applied = apply_threshold(stack.database_url, detector=detector, asset=asset, threshold=threshold,
                                  reason=why, actor=who, dispositions=proposal.disposition_ids if proposal else [],
                                  model_dir=s.model_dir, cache_dir=s.model_cache_dir, shadow=shadow,
                                  modality=modality)
    if threshold < applied.previous_threshold:
        console.print(f"[yellow]note:[/] {threshold:.2f} is below the previous {applied.previous_threshold:.2f}: "
                      "more alarms (a lowered threshold is never proposed from feedback)")
    console.print(f"model {applied.new.model_id}@{applied.new.version}{' (shadow)' if shadow else ''}: {detector} on "
                  f"{asset}, threshold {applied.previous_threshold:.2f} -> {threshold:.2f} (1 false alarm in "
                  f"{10 ** threshold:,.0f} normal events), from {applied.previous.model_id}@{applied.previous.version}"
                  f" by {who}")
    print(applied.new.version)
