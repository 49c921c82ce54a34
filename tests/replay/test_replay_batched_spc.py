"""A replay of batched ``spc`` history from the real broker scores what the single-record form scores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from linewatch.config import Settings
from linewatch.detectors.bundle import ModelBundle
from linewatch.producers.spc import produce_spc
from linewatch.replay.kafka_source import KafkaRange, kafka_history
from linewatch.replay.pipeline import ReplayPipeline
from linewatch.schemas.codec import encode
from linewatch.schemas.rows import ScoreRow
from linewatch.schemas.topics import SPC
from linewatch.simulation.spc import simulate_spc
from linewatch.streams.messages import RawMessage
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch

pytestmark = pytest.mark.integration


class Charts:
    """An EWMA chart for every scope: stateful, so a replay must keep each asset's record order."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def models_for(self, modality, asset_id, sku, camera="*"):
        return [self.bundle]


def test_replayed_batched_messages_score_like_single_records(bootstrap):
    normal = simulate_spc(n_parts=1000, seed=0, fault_fraction=0.0)
    models = Charts(ModelBundle.fit("ewma", normal.X, feature_names=normal.feature_names, target_far=0.01))
    asset = f"rb-{uuid.uuid4().hex[:6]}"
    records = simulate_spc(n_parts=45, seed=7, fault_fraction=0.2, assets=(asset,),
                           start=datetime.now(UTC) - timedelta(hours=1)).records()
    assert produce_spc(bootstrap, records, records_per_message=10) == 45

    history = list(kafka_history(bootstrap, [SPC.name], KafkaRange(assets=frozenset({asset}))))
    assert len(history) == 5  # 4 full arrays of 10 and the last 5
    pipeline = ReplayPipeline(models, fusion=Settings().fusion_config())
    replayed = pipeline.feed(history)
    pipeline.close()

    alone = score_spc_batch([RawMessage(SPC.name, 0, i, asset.encode(), encode(r)) for i, r in enumerate(records)],
                            models, StreamStates())
    at = list(ScoreRow.model_fields).index("scored_at")
    assert len(replayed.scores) == 45 and len(replayed.deadletters) == 0
    assert [r[:at] + r[at + 1:] for r in replayed.scores] == [r[:at] + r[at + 1:] for r in alone.scores]
