"""Stage: curate. Rationale store -> multi-path dataset (filter, normalise, dedup, sample, guard, card).

Public API: :func:`curate_store`, :func:`load_path_dataset`, :func:`load_data_card`,
:func:`export_compact_json`. Heavy libraries (datasets, the answer checker) load on first call.
"""

from cotdistill.curate.pipeline import curate_store, export_compact_json, load_data_card, load_path_dataset

__all__ = ["curate_store", "load_path_dataset", "load_data_card", "export_compact_json"]
