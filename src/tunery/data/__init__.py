"""Datasets to tensors: dataset_info.json -> canonical records -> token ids + labels -> batches.

The pipeline lives in ``data/pipeline.py``; this package re-exports its public names
(docs/ARCHITECTURE.md, "Data pipeline"). Templates: ``tunery.data.template``.
"""

from tunery.data.pipeline import (
    DatasetModule,
    DataStats,
    copy_skipped,
    get_collator,
    get_dataset,
    load_records,
    process_records,
    resolve_packing,
    settings_for,
    skipped_lines,
)
from tunery.data.processors import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "DataStats", "DatasetModule", "get_collator", "get_dataset", "load_records",
           "process_records", "resolve_packing", "settings_for", "copy_skipped", "skipped_lines"]
