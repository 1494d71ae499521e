"""The bottom layer: helpers every other module may use and which import nothing else from ``clusterloss``.

``files`` (atomic writes), ``threads`` (CPU thread counts for torch, faiss and other OpenMP libraries),
``devices`` (which torch device to run on). The package ``__init__`` imports none of them, so
``clusterloss.utils.files`` stays free of torch.
"""
