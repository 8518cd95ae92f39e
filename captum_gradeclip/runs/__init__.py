"""Dataset runs as a library: :func:`explain_dataset` explains every row of a pairs file into a result store.

- :mod:`~captum_gradeclip.runs.pairs`: reading the pairs file (:func:`read_pairs`, :class:`InputError`);
- :mod:`~captum_gradeclip.runs.explainer`: one chunk of items into one table of rows;
- :mod:`~captum_gradeclip.runs.store`: the run over the store: checking, resuming, sharing parts among ranks;
- :mod:`~captum_gradeclip.runs.convert`: converting a store of the earlier format.

``captum-gradeclip explain-dataset`` is argparse plus :func:`explain_dataset`.
"""

from __future__ import annotations

from captum_gradeclip.runs.pairs import InputError, Item, read_pairs
from captum_gradeclip.runs.store import check_store, explain_dataset, run_config

__all__ = ["InputError", "Item", "check_store", "explain_dataset", "read_pairs", "run_config"]
