"""Text previews of dataset rows for the selections views, from the stored (already validated) file.

Parsing a dataset is O(file), so the parsed examples of the few most recently used datasets are kept in
memory; the key includes the checksum, so a replaced file can never serve stale previews.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from api.models import Dataset
from api.settings import Settings

CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, str], list] = OrderedDict()
_lock = threading.Lock()


def examples_for(settings: Settings, dataset: Dataset | None) -> list | None:
    """The dataset's examples (uds.formats.Example), or None if the dataset or its file is gone."""
    if dataset is None:
        return None
    key = (dataset.id, dataset.sha256)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    path = settings.served_file(dataset.storage_path)  # None when missing or a link out of the data folder
    if path is None:
        return None
    from uds.formats import load_examples

    examples = load_examples(str(path))
    with _lock:
        _cache[key] = examples
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return examples


def row_preview(examples: list | None, row: int, max_chars: int = 200) -> str | None:
    if examples is None or not 0 <= row < len(examples):
        return None
    from uds.formats import example_preview

    return example_preview(examples[row], max_chars=max_chars)


def forget(dataset_id: str) -> None:
    with _lock:
        for key in [k for k in _cache if k[0] == dataset_id]:
            del _cache[key]
