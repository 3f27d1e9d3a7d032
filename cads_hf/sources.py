"""Named data sources, the selected subset D_r, and the samplers that feed Trainer from them.

Every sampler yields one global sequence of indices, deterministic given (seed, epoch), so every process computes
the same sequence; accelerate then hands each process its own shard of the batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset, Sampler

SOURCE_ID = "source_id"


def read_rows(dataset, indices: Sequence[int]) -> list:
    """Rows `indices` of `dataset`, in one batched read where it has `__getitems__` (as `datasets.Dataset` and the
    DataLoader protocol define it), else row by row. A `datasets.Dataset` runs its Arrow formatting once per call:
    the 128 images of a batch read in one call took about half as long as read row by row."""
    indices = [int(i) for i in indices]
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(indices) if getitems is not None else [dataset[i] for i in indices]


class CachedRows(Dataset):
    """`dataset` with each row kept in memory once read, for runs that read the same rows again (the proxies: every
    candidate reads the same cut sources, and the smaller cuts are the start of the larger). Only rows read are kept.
    Each read returns a shallow copy of the row, so a collator that reassigns a row's keys changes no later read."""

    def __init__(self, dataset):
        self.dataset, self.rows = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list:
        indices = [int(i) for i in indices]
        missing = list(dict.fromkeys(i for i in indices if i not in self.rows))
        if missing:
            self.rows.update(zip(missing, read_rows(self.dataset, missing)))
        return [dict(self.rows[i]) if isinstance(self.rows[i], dict) else self.rows[i] for i in indices]


class SourceSet(Dataset):
    """Several named sources seen as one indexable dataset; each row is tagged with its `source_id`.

    Rows are read from the sources themselves (no copy), so formats and transforms set on a source (for example
    `datasets.Dataset.with_transform`) stay in effect.
    """

    def __init__(self, sources: Mapping[str, Sequence]):
        if not isinstance(sources, Mapping) or not sources:
            raise ValueError("sources must be a non-empty mapping of source name -> dataset.")
        for name, source in sources.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"Source names must be non-empty strings, got {name!r}.")
            if len(source) == 0:
                raise ValueError(f"Source {name!r} is empty: every source needs at least one example.")
        self._check_columns(sources)
        self.names = list(sources)
        self.sources = [sources[name] for name in self.names]
        self.sizes = [len(source) for source in self.sources]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])

    @staticmethod
    def _check_columns(sources: Mapping[str, Sequence]) -> None:
        columns = {name: getattr(source, "column_names", None) for name, source in sources.items()}
        known = {name: set(cols) for name, cols in columns.items() if cols is not None}
        if not known:
            return
        first_name, first = next(iter(known.items()))
        for name, cols in known.items():
            if SOURCE_ID in cols:
                raise ValueError(f"Source {name!r} already has a {SOURCE_ID!r} column; the trainer adds it.")
            if cols != first:
                raise ValueError(
                    f"Source {name!r} has columns {sorted(cols)} but source {first_name!r} has {sorted(first)}; "
                    f"missing in {name!r}: {sorted(first - cols)}, extra: {sorted(cols - first)}."
                )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(source id, index inside that source) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples.")
        source = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return source, int(index - self.offsets[source])

    def __getitem__(self, index: int) -> dict:
        source, local = self.locate(int(index))
        return {**self.sources[source][local], SOURCE_ID: source}

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Rows `indices` (the DataLoader's batched read): one `read_rows` per source, in the order asked."""
        located = [self.locate(int(index)) for index in indices]
        rows = [None] * len(located)
        for source in sorted({source for source, _ in located}):
            positions = [p for p, (s, _) in enumerate(located) if s == source]
            for position, row in zip(positions, read_rows(self.sources[source], [located[p][1] for p in positions])):
                rows[position] = {**row, SOURCE_ID: source}
        return rows

    def source_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    def column(self, name: str) -> np.ndarray:
        """One column of every source, concatenated (e.g. `length` for token budgets)."""
        return np.concatenate([np.asarray(source[name]) for source in self.sources])


def _permutation(n: int, seed: int, *salt: int) -> np.ndarray:
    return np.random.default_rng([seed, *salt]).permutation(n)


def selected_indices(source_sizes: Sequence[int], ratios: Sequence[float], seed: int) -> list[np.ndarray]:
    """D_r: for each source j, the first round(r_j |D_j|) examples of a seeded permutation (local indices).

    Subsets are nested: raising r_j only adds examples, so nearby ratios select nearby data.
    """
    if len(ratios) != len(source_sizes):
        raise ValueError(f"Got {len(ratios)} ratios for {len(source_sizes)} sources.")
    chosen = []
    for j, (size, ratio) in enumerate(zip(source_sizes, ratios)):
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"Ratio of source {j} must lie in [0, 1], got {ratio}.")
        chosen.append(_permutation(size, seed, j)[: int(round(float(ratio) * size))])
    if sum(len(c) for c in chosen) == 0:
        raise ValueError(f"Ratios {list(map(float, ratios))} select no data from sources of sizes {list(source_sizes)}.")
    return chosen


class SourceMixtureSampler(Sampler[int]):
    """Draws from D_r, the fraction r_j of each source j, for exactly a budget.

    Epochs over D_r are reshuffled each pass and the sequence stops when the budget is spent: `num_samples`
    examples, or with `lengths` (tokens per example) once `num_tokens` tokens have been drawn. The last example may
    cross the token budget; it is the only overshoot.
    """

    def __init__(
        self,
        source_sizes: Sequence[int],
        ratios: Sequence[float],
        num_samples: int | None = None,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        num_tokens: float | None = None,
    ):
        if (num_samples is None) == (num_tokens is None):
            raise ValueError("Give exactly one of num_samples or num_tokens.")
        if num_tokens is not None and lengths is None:
            raise ValueError("A token budget needs the token length of every example.")
        offsets = np.concatenate([[0], np.cumsum(source_sizes)])
        local = selected_indices(source_sizes, ratios, seed)
        self.indices = np.concatenate([offsets[j] + idx for j, idx in enumerate(local)]).astype(np.int64)
        self.seed = seed
        if num_tokens is not None:
            num_samples = self._samples_for_tokens(np.asarray(lengths), num_tokens)
        if num_samples < 1:
            raise ValueError(f"The budget pays for no example (num_samples={num_samples}).")
        self.num_samples = int(num_samples)

    def _order(self, pass_index: int) -> np.ndarray:
        return self.indices[_permutation(len(self.indices), self.seed, 1_000_003, pass_index)]

    def _samples_for_tokens(self, lengths: np.ndarray, num_tokens: float) -> int:
        total, count, pass_index = 0.0, 0, 0
        while True:
            cumulative = total + np.cumsum(lengths[self._order(pass_index)])
            crossing = int(np.searchsorted(cumulative, num_tokens, side="left"))
            if crossing < len(cumulative):
                return count + crossing + 1
            total, count, pass_index = float(cumulative[-1]), count + len(cumulative), pass_index + 1

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        emitted, pass_index = 0, 0
        while emitted < self.num_samples:
            for index in self._order(pass_index)[: self.num_samples - emitted]:
                yield int(index)
                emitted += 1
            pass_index += 1


class StratifiedSourceSampler(Sampler[int]):
    """The search's sampler: every consecutive block of `batch_size` indices holds every source equally.

    Each source's mean loss is then measured in every batch, which is what lets one forward pass score any ratio
    vector (DESIGN §3). Each source cycles through its own reshuffled order, so small sources repeat sooner.
    """

    def __init__(self, source_sizes: Sequence[int], batch_size: int, num_samples: int | None = None, seed: int = 0):
        if batch_size < len(source_sizes):
            raise ValueError(
                f"The per-device batch size ({batch_size}) must be at least the number of sources "
                f"({len(source_sizes)}) so that every batch measures every source."
            )
        self.source_sizes = list(source_sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.source_sizes)])
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.num_samples = int(num_samples if num_samples is not None else self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.source_sizes)
        cursors = [0] * n
        orders = [_permutation(size, self.seed, j, self.epoch, 0) for j, size in enumerate(self.source_sizes)]
        laps = [0] * n
        for position in range(self.num_samples):
            block, slot = divmod(position, self.batch_size)
            # Rotate which sources get the leftover slots so that no source is favoured across batches.
            j = (slot + block) % n
            if cursors[j] == len(orders[j]):
                laps[j] += 1
                orders[j] = _permutation(self.source_sizes[j], self.seed, j, self.epoch, laps[j])
                cursors[j] = 0
            yield int(self.offsets[j] + orders[j][cursors[j]])
            cursors[j] += 1



def selection_ranks(source_sizes: Sequence[int], seed: int) -> np.ndarray:
    """Each example's position in its source's selection order: it belongs to D_r exactly when its rank is below
    round(r_j |D_j|) (the order `selected_indices` uses). Indexed by global index."""
    return np.concatenate([np.argsort(_permutation(size, seed, j)) for j, size in enumerate(source_sizes)])


class SelectionAwareSampler(StratifiedSourceSampler):
    """A search sampler that follows the current selection: in every batch each source gets an equal share of
    slots, half drawn from the examples its current ratio selects (what a run on D_s trains on) and half from those
    it leaves out (what raising the ratio would add). Sources with nothing on one side fill both halves from the
    other.

    `ratios(batch_index)` gives the ratios for each batch (its index counted over epochs), so the search trains on
    the selection as it evolves; draws are seeded by (seed, epoch, batch), so a resumed run draws the same batches.
    """

    def __init__(
        self,
        source_sizes: Sequence[int],
        batch_size: int,
        ratios,
        num_samples: int | None = None,
        seed: int = 0,
    ):
        super().__init__(source_sizes, batch_size, num_samples, seed)
        self.ratios = ratios
        self.orders = [_permutation(size, seed, j) for j, size in enumerate(self.source_sizes)]

    def _batch(self, block: int, size: int) -> list[int]:
        n = len(self.source_sizes)
        rng = np.random.default_rng([self.seed, 7_368_787, self.epoch, block])
        batches_per_epoch = -(-self.num_samples // self.batch_size)
        ratios = [float(r) for r in self.ratios(self.epoch * batches_per_epoch + block)]
        shares = [size // n + (1 if (slot - block) % n < size % n else 0) for slot in range(n)]
        batch = []
        for j, share in enumerate(shares):
            kept = int(round(ratios[j] * self.source_sizes[j]))
            seen, fresh = self.orders[j][:kept], self.orders[j][kept:]
            n_seen = (share + 1) // 2 if len(fresh) else share
            n_seen = n_seen if len(seen) else 0
            picks = [seen[rng.integers(len(seen))] for _ in range(n_seen)]
            picks += [fresh[rng.integers(len(fresh))] for _ in range(share - n_seen)]
            batch += [int(self.offsets[j] + i) for i in picks]
        return batch

    def __iter__(self) -> Iterator[int]:
        for block, start in enumerate(range(0, self.num_samples, self.batch_size)):
            yield from self._batch(block, min(self.batch_size, self.num_samples - start))
