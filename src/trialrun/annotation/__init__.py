"""Human annotation: blinded sheets out, validated labels in, agreement between raters.

- `sheets`: `export_sheets` samples a run's done trials into one blinded sheet per coder
  (CSV and JSONL, a codebook beside them); `export_disagreements` writes the trials two
  coders labelled differently as a sheet for adjudication.
- `importing`: `import_sheet` reads a filled sheet back, checks every label against the
  sheet's schema and stores all of them or none.
- `agreement`: `agreement` compares every pair of raters (coders, `adjudicated`, each judge
  as `judge:NAME`): Cohen's kappa with its CI, percent agreement, the confusion table; and
  for a binary field, each judge's sensitivity and specificity against the humans with the
  Rogan-Gladen corrected rate.

Blinding: a sheet shows the item (its id and fields) and the responses, never the model,
grid values, judge verdicts or trial id; the map from a sheet's row ids to trial ids is
kept only in the run's store (`annotation_sheets`).
"""

from trialrun.annotation.agreement import (
    AgreementReport,
    JudgeAccuracy,
    PairAgreement,
    agreement,
    rogan_gladen,
)
from trialrun.annotation.importing import ImportSummary, import_sheet
from trialrun.annotation.sheets import (
    ADJUDICATED,
    ExportSummary,
    export_disagreements,
    export_sheets,
)

__all__ = [
    "ADJUDICATED",
    "AgreementReport",
    "ExportSummary",
    "ImportSummary",
    "JudgeAccuracy",
    "PairAgreement",
    "agreement",
    "export_disagreements",
    "export_sheets",
    "import_sheet",
    "rogan_gladen",
]
