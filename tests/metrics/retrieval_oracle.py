"""The per-query part of the brute-force retrieval oracles (all against all; query/gallery), written once."""


def empty_sums(ks) -> dict[str, float]:
    return {f"recall@{k}": 0.0 for k in ks} | {"precision@1": 0.0, "r_precision": 0.0, "map@r": 0.0}


def add_query(sums: dict[str, float], relevant: list[bool], ks, r: int) -> None:
    """Add one query's Recall@K, P@1, R-Precision and AP@R to ``sums``, from ``relevant`` (whether each
    neighbour, nearest first, has the query's label) and ``r`` (how many neighbours do)."""
    for k in ks:
        sums[f"recall@{k}"] += float(any(relevant[:k]))
    sums["precision@1"] += float(relevant[0])
    sums["r_precision"] += sum(relevant[:r]) / r
    ap, hits = 0.0, 0
    for i in range(r):
        if relevant[i]:
            hits += 1
            ap += hits / (i + 1)
    sums["map@r"] += ap / r
