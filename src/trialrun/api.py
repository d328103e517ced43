"""The Python API under the CLI, in one place: load, plan, run, resume and open runs.

A facade: each name lives in the module that owns its job, and is re-exported here so that
`trialrun.api.X` reaches every public name, and the CLI imports only this module.

- `trialrun.loading`: config (file or dict) and overrides → a checked `Prepared` experiment.
- `trialrun.runs`: run folders: create, find, read (`Run`) and lock them.
- `trialrun.running`: execute run folders to the end (`run`, `resume`, `collect`, ...),
  stopping cleanly on SIGINT/SIGTERM, and tell an `Observer` what happens.
- `trialrun.rescoring`: score a finished run's records again (`score_run`), no model call.
- `trialrun.annotation`: blinded sheets for human coders, their labels, agreement.
- `trialrun.analysis`: a run's (or several runs') statistics: `run_stats`, `compare_runs`.
- `trialrun.pilot`: what a pilot run tells a power analysis (`read_pilot`).
- `trialrun.integrity`: duplicates and overlap in datasets (`check_data`), canaries.
- `trialrun.verification`: a run folder checked against its manifest (`verify_run`).
- `trialrun.report`: a run's statistics and trials as one HTML file (`write_report`).
- `trialrun.view`: the live local dashboard over a runs folder (`serve_view`).
"""

from __future__ import annotations

from trialrun.analysis import StatsOptions as StatsOptions
from trialrun.analysis import StatsReport as StatsReport
from trialrun.analysis import compare_runs as compare_runs
from trialrun.analysis import run_stats as run_stats
from trialrun.annotation import AgreementReport as AgreementReport
from trialrun.annotation import export_disagreements as export_disagreements
from trialrun.annotation import export_sheets as export_sheets
from trialrun.annotation import import_sheet as import_sheet
from trialrun.annotation.agreement import agreement as agreement
from trialrun.inspect_log import write_inspect_logs as write_inspect_logs
from trialrun.integrity import check_data as check_data
from trialrun.integrity import found_anything as found_anything
from trialrun.judging import JudgePass as JudgePass
from trialrun.judging import judge_run as judge_run
from trialrun.loading import Prepared as Prepared
from trialrun.loading import load as load
from trialrun.loading import load_many as load_many
from trialrun.loading import plan_summary as plan_summary
from trialrun.merging import MergeReport as MergeReport
from trialrun.merging import merge_runs as merge_runs
from trialrun.pilot import Pilot as Pilot
from trialrun.pilot import read_pilot as read_pilot
from trialrun.report import REPORT_MAX_METRICS as REPORT_MAX_METRICS
from trialrun.report import ReportData as ReportData
from trialrun.report import ReportOptions as ReportOptions
from trialrun.report import build_report as build_report
from trialrun.report import write_report as write_report
from trialrun.rescoring import ScoreSummary as ScoreSummary
from trialrun.rescoring import score_run as score_run
from trialrun.running import Interrupted as Interrupted
from trialrun.running import Observer as Observer
from trialrun.running import aresume as aresume
from trialrun.running import arun as arun
from trialrun.running import collect as collect
from trialrun.running import detach as detach
from trialrun.running import open_target as open_target
from trialrun.running import resume as resume
from trialrun.running import resume_many as resume_many
from trialrun.running import run as run
from trialrun.running import run_prepared as run_prepared
from trialrun.runs import Run as Run
from trialrun.runs import RunBusy as RunBusy
from trialrun.runs import create_run as create_run
from trialrun.runs import create_runs as create_runs
from trialrun.runs import list_runs as list_runs
from trialrun.runs import open_run as open_run
from trialrun.stopping import stop_run as stop_run
from trialrun.verification import VerifyLine as VerifyLine
from trialrun.verification import verify_run as verify_run
from trialrun.view import Dashboard as Dashboard
from trialrun.view import serve_view as serve_view
