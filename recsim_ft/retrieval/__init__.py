"""Retrieval over a whole catalogue and serving without recsim-ft.

- :class:`ItemEmbeddings`: a trained model's item embeddings and score prior, computed once;
  exact top-k for any number of users by blocked matrix products (bounded memory).
- :class:`ApproximateIndex`: a FAISS index of them (``retrieval`` extra), with its recall
  against the exact top-k (:func:`recall_at_k`).
- :func:`export_model`: item and user embeddings as ``.npy`` files and the user tower as an
  ONNX graph (``onnx`` extra), checked against the model, so a service answers without
  recsim-ft.
- :func:`sharded_top_k`: the exact top-k of every user in blocks across Ray workers (``ray``
  extra), the same arrays as one process.
"""

from recsim_ft.retrieval.ann import ApproximateIndex, recall_at_k
from recsim_ft.retrieval.catalogue import ItemEmbeddings, embed_rows
from recsim_ft.retrieval.export import export_model, export_user_tower, sample_users
from recsim_ft.retrieval.sharded import sharded_top_k

__all__ = [
    "ApproximateIndex",
    "ItemEmbeddings",
    "embed_rows",
    "export_model",
    "export_user_tower",
    "recall_at_k",
    "sample_users",
    "sharded_top_k",
]
