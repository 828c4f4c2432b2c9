"""Event data: the on-disk event store, the Lightning data module, and format readers/writers.

* :mod:`gnnreco.data.store` — sharded, lazily read, schema-versioned store of processed events;
* :mod:`gnnreco.data.datamodule` — ``EventDataModule`` shared by every task;
* :mod:`gnnreco.data.trackml` — TrackML CSV reader/writer and score (drop-in for trackml-library).
"""

from gnnreco.data.datamodule import EventDataModule
from gnnreco.data.store import EventStore, EventStoreWriter, write_events
from gnnreco.data.trackml import (
                                  TrackMLEvent,
                                  TrackMLFormatError,
                                  load_dataset,
                                  load_detector,
                                  load_event,
                                  score_event,
                                  write_event,
                                  write_submission,
)

__all__ = ["EventDataModule", "EventStore", "EventStoreWriter", "write_events", "TrackMLEvent",
           "TrackMLFormatError", "load_dataset", "load_detector", "load_event", "score_event", "write_event",
           "write_submission"]
