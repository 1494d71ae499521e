"""ClassBalancedBatchSampler: batches of exactly P classes x K images, one epoch ~ every image once.

How one epoch's global schedule is drawn (identically on every rank, from ``seed`` and the epoch):

1. Each class's indices are shuffled and cut into chunks of K. A last partial chunk, and a class with fewer
   than K images, is filled up to K by resampling images of the same class (without replacement from the
   rest of the class where possible). Class c contributes ``ceil(n_c / K)`` chunks; all of them are used.
2. The number of batches is ``B = max(ceil(T / P), max_c ceil(n_c / K))`` with T the total number of chunks,
   rounded up to a multiple of ``world_size``.
3. Batches are filled one at a time. With R batches left, a class that still has R chunks must go into this
   batch (else it could not finish); the remaining places go to classes with chunks left, drawn without
   replacement with probability proportional to their remaining chunks. When fewer than P classes have chunks
   left, the batch is completed with fresh resampled chunks of other classes. These rules keep the schedule
   feasible, so every chunk (every image) is used in exactly B batches; only the filler images repeat.

Rank r of ``world_size`` takes global batches ``r, r + world_size, ...``: disjoint, equally many per rank.

Many classes (more than ``LAYOUT_MIN_CLASSES`` = 4,096, e.g. Stanford Online Products' 11,318 products of 2-12
images, In-Shop's 3,997 items are below): step 3's per-batch scan of every class would make an epoch cost
O(batches x classes), quadratic in the number of classes. There, after step 1, the chunks are laid out
instead: classes in a random order, each class's chunks consecutive, and chunk t goes to batch ``t mod B``.
A class has at most B chunks, so its chunks land in distinct batches, and each batch gets at most
``ceil(T / B) <= P`` chunks; the rest of a batch is filled with resampled chunks of random other classes, and
the batches are shuffled. Same guarantees (P distinct classes, every chunk in exactly one batch, B batches),
O(images) time and memory per epoch. Below the threshold the weighted draw above is kept, so the schedules
of existing runs (CIFAR, ImageNet, CUB, Cars) are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["ClassBalancedBatchSampler", "LAYOUT_MIN_CLASSES"]

LAYOUT_MIN_CLASSES = 4096


def _as_label_array(labels: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


class ClassBalancedBatchSampler:
    """Iterable of index batches (lists of ``P * K`` ints): P distinct classes, K images of each.

    Args:
        labels: [N] integer class ids of the dataset (any ids; classes with no image simply don't occur).
        classes_per_batch: P, distinct classes per batch (at most the number of classes present).
        samples_per_class: K, images per class per batch (classes with fewer images repeat some).
        seed: the schedule of epoch e is a function of (seed, e) only.
        rank, world_size: for DDP; each rank yields its own disjoint share of the global schedule.

    ``len()`` is the number of batches this rank yields per epoch. Call ``set_epoch(e)`` before each epoch.
    ``state_dict()`` records the epoch and how many batches were already yielded, so after
    ``load_state_dict`` the next iteration continues mid-epoch where the saved run stopped.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        label_array = _as_label_array(labels)
        if classes_per_batch < 1 or samples_per_class < 1:
            raise ValueError(
                f"classes_per_batch and samples_per_class must be >= 1, got {classes_per_batch}, "
                f"{samples_per_class}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        classes, inverse = np.unique(label_array, return_inverse=True)
        if classes_per_batch > len(classes):
            raise ValueError(
                f"classes_per_batch={classes_per_batch} but the labels contain only {len(classes)} classes; "
                "lower classes_per_batch (P) or train on more classes"
            )
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(classes))
        self._class_indices = np.split(order, np.cumsum(counts)[:-1])
        self.classes = classes
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.num_images = len(label_array)
        self._chunks_per_class = -(-counts // samples_per_class)
        total_chunks = int(self._chunks_per_class.sum())
        batches = max(-(-total_chunks // classes_per_batch), int(self._chunks_per_class.max()))
        self.global_batches = -(-batches // world_size) * world_size
        self.epoch = 0
        self._position = 0  # batches of the current epoch this rank has already yielded

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def __len__(self) -> int:
        return self.global_batches // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s schedule; restarts it unless it is the epoch already in progress."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._position = 0

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self._position,
            "world_size": self.world_size,
            "global_batches": self.global_batches,
        }

    def load_state_dict(self, state: dict) -> None:
        if (
            state.get("global_batches", self.global_batches) != self.global_batches
            or state.get("world_size", self.world_size) != self.world_size
        ):
            raise ValueError(
                "sampler state was saved for a different dataset, batch shape or world size "
                f"({state.get('global_batches')} global batches over {state.get('world_size')} ranks, "
                f"now {self.global_batches} over {self.world_size}); "
                "resume with the same data and batch settings"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])

    def _fill_chunk(self, rng: np.random.Generator, members: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        """Complete ``chunk`` (a few indices of one class) to K indices by resampling the class."""
        missing = self.samples_per_class - len(chunk)
        if missing == 0:
            return chunk
        rest = np.setdiff1d(members, chunk, assume_unique=True)
        if len(rest) >= missing:
            extra = rng.choice(rest, size=missing, replace=False)
        else:
            extra = np.concatenate([rest, rng.choice(members, size=missing - len(rest), replace=True)])
        return np.concatenate([chunk, extra])

    def global_schedule(self, epoch: int | None = None) -> np.ndarray:
        """The whole epoch for all ranks: int64 [global_batches, P * K] dataset indices."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        p, k = self.classes_per_batch, self.samples_per_class
        chunks: list[list[np.ndarray]] = []
        for members in self._class_indices:
            shuffled = rng.permutation(members)
            pieces = [shuffled[i : i + k] for i in range(0, len(shuffled), k)]
            pieces[-1] = self._fill_chunk(rng, members, pieces[-1])
            chunks.append(pieces)
        if len(chunks) > LAYOUT_MIN_CLASSES:
            return self._layout_schedule(rng, chunks)
        remaining = self._chunks_per_class.copy()
        num_classes = len(remaining)
        schedule = np.empty((self.global_batches, p * k), dtype=np.int64)
        for b in range(self.global_batches):
            batches_left = self.global_batches - b
            forced = np.flatnonzero(remaining == batches_left)
            optional = np.flatnonzero((remaining > 0) & (remaining < batches_left))
            places = p - len(forced)
            if len(optional) > places:
                # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)).
                keys = np.log(rng.random(len(optional))) / remaining[optional]
                optional = optional[np.argsort(-keys)[:places]]
            picked = np.concatenate([forced, optional])
            if len(picked) < p:
                idle = np.setdiff1d(np.arange(num_classes), picked)
                fillers = rng.choice(idle, size=p - len(picked), replace=False)
            else:
                fillers = np.empty(0, dtype=np.int64)
            parts = []
            for c in picked:
                remaining[c] -= 1
                parts.append(chunks[c][remaining[c]])
            for c in fillers:
                parts.append(self._fill_chunk(rng, self._class_indices[c], np.empty(0, dtype=np.int64)))
            order = rng.permutation(p)  # classes in random order within the batch
            schedule[b] = np.concatenate([parts[i] for i in order])
        return schedule

    def _layout_schedule(self, rng: np.random.Generator, chunks: list[list[np.ndarray]]) -> np.ndarray:
        """Step 3 for many classes: chunk t of a random class order goes to batch t mod B (module doc)."""
        p, k = self.classes_per_batch, self.samples_per_class
        num_classes, batches = len(chunks), self.global_batches
        order = rng.permutation(num_classes)
        sequence_class = np.repeat(order, self._chunks_per_class[order])
        sequence = np.stack([piece for c in order for piece in chunks[c]])  # [T, K]
        schedule = np.empty((batches, p * k), dtype=np.int64)
        for b in range(batches):
            positions = np.arange(b, len(sequence), batches)
            present = set(sequence_class[positions].tolist())
            parts = list(sequence[positions])
            while len(parts) < p:  # fillers: random classes not yet in this batch (rejection: p << classes)
                c = int(rng.integers(num_classes))
                if c not in present:
                    present.add(c)
                    parts.append(self._fill_chunk(rng, self._class_indices[c], np.empty(0, dtype=np.int64)))
            shuffled = rng.permutation(p)
            schedule[b] = np.concatenate([parts[i] for i in shuffled])
        return schedule[rng.permutation(batches)]

    def __iter__(self) -> Iterator[list[int]]:
        schedule = self.global_schedule(self.epoch)[self.rank :: self.world_size]
        while self._position < len(schedule):
            batch = schedule[self._position]
            self._position += 1
            yield batch.tolist()
        self._position = 0
