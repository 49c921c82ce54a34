"""The ``drift`` row: one drift check of one model version on one asset, for scores or one input.

Same contract as :mod:`linewatch.schemas.rows`: writers build plain tuples in the field order of
this model (the COPY / INSERT column order), and a test holds the fields to the columns of
``sql/150_drift.sql``. It lives in its own module so drift could be added without touching the
rows other slices of issue 11 edit; ``ROW_TYPES`` can list it once the lead folds it in.
"""

from __future__ import annotations

from datetime import datetime

from linewatch.schemas.rows import Row

#: ``kind`` of a row about the calibrated score stream (``feature`` is then ``''``).
SCORE_DRIFT = "score"
#: ``kind`` of a row about one model input (``feature`` names it) against the training reference.
INPUT_DRIFT = "input"


class DriftRow(Row):
    """Where one model version's baseline stands on one asset, at the event time ``ts``.

    Score rows compare the window's tail probabilities with Uniform(0, 1) (what calibration
    promises on normal data) and its alarm rate with the promised false-alarm rate and its
    interval; input rows compare one feature with the training reference sample. PSI, KS and
    Page-Hinkley/ADWIN are the evidence, ``drifted`` the verdict of this window, and
    ``retrain_recommended`` says the drift has persisted (see
    :mod:`linewatch.detectors.score_drift` for the rules). ``promised_*`` are NULL on input rows.
    """

    __table__ = "drift"
    __key__ = ("ts", "asset_id", "detector", "model_version", "kind", "feature")

    ts: datetime
    asset_id: str
    modality: str
    detector: str
    model_version: str
    kind: str
    feature: str
    n: int
    psi: float
    ks_statistic: float
    ks_pvalue: float
    page_hinkley: bool
    alarm_rate: float | None
    promised_far: float | None
    promised_far_low: float | None
    promised_far_high: float | None
    drifted: bool
    retrain_recommended: bool
    detail: str
