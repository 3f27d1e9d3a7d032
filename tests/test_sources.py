import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler

from cads_hf.budget import ComputeBudget
from cads_hf.sources import CachedRows, SourceMixtureSampler, SourceSet, StratifiedSourceSampler, selected_indices


def _shard(sampler, batch_size, processes, index):
    return [i for batch in BatchSamplerShard(BatchSampler(sampler, batch_size, False), processes, index) for i in batch]


def test_mixture_proportions_follow_ratio_times_size():
    sizes, ratios = [1000, 4000, 2000], [0.8, 0.1, 0.5]
    sampler = SourceMixtureSampler(sizes, ratios, num_samples=20_000, seed=3)
    source = np.searchsorted(np.cumsum(sizes), list(sampler), side="right")
    counts = np.bincount(source, minlength=3) / 20_000
    expected = np.array(ratios) * sizes / np.dot(ratios, sizes)
    np.testing.assert_allclose(counts, expected, atol=0.01)


def test_exact_sample_budget_and_no_repeats_within_a_pass():
    sampler = SourceMixtureSampler([100, 50], [0.5, 1.0], num_samples=250, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 250
    selected = len(order[:100])
    assert len(set(order[:selected])) == selected  # first pass over the 100 selected examples has no repeat
    assert set(order) == set(order[:100])


def test_token_budget_stops_at_first_crossing():
    lengths = np.arange(1, 61)
    sampler = SourceMixtureSampler([30, 30], [1.0, 1.0], lengths=lengths, num_tokens=5000, seed=1)
    drawn = lengths[list(sampler)]
    assert drawn.sum() >= 5000 and drawn[:-1].sum() < 5000


def test_same_sequence_on_every_rank_and_disjoint_shards():
    make = lambda: SourceMixtureSampler([64, 64], [1.0, 0.5], num_samples=96, seed=5)  # noqa: E731
    assert list(make()) == list(make())
    shards = [_shard(make(), 8, 2, rank) for rank in range(2)]
    positions = [set(range(r * 8, 96, 16)) for r in range(2)]
    assert all(len(s) == 48 for s in shards)
    global_sequence = list(make())
    for rank, shard in enumerate(shards):
        expected = [global_sequence[p + o] for p in sorted(x for x in positions[rank] if x % 16 == rank * 8) for o in range(8)]
        assert shard == expected


def test_stratified_batches_measure_every_source_and_reshuffle_per_epoch():
    sampler = StratifiedSourceSampler([10, 500, 40], batch_size=7, num_samples=700, seed=0)
    order = np.array(list(sampler))
    source = np.searchsorted(np.cumsum([10, 500, 40]), order, side="right")
    for batch in source.reshape(-1, 7):
        assert set(batch) == {0, 1, 2}
    assert np.abs(np.bincount(source) - 700 / 3).max() <= 2
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_stratified_rejects_batch_smaller_than_source_count():
    with pytest.raises(ValueError, match="at least the number of sources"):
        StratifiedSourceSampler([5, 5, 5], batch_size=2)


def test_ratios_selecting_nothing_are_rejected():
    with pytest.raises(ValueError, match="select no data"):
        SourceMixtureSampler([10, 10], [0.0, 0.01], num_samples=5)


def test_source_set_tags_rows_and_validates():
    a = Dataset.from_dict({"x": [1, 2], "labels": [0, 1]})
    b = Dataset.from_dict({"x": [3], "labels": [1]})
    source_set = SourceSet({"a": a, "b": b})
    assert source_set[2] == {"x": 3, "labels": 1, "source_id": 1}
    with pytest.raises(ValueError, match="Source 'empty' is empty"):
        SourceSet({"a": a, "empty": a.select([])})
    with pytest.raises(ValueError, match="missing in 'c': \\['labels'\\]"):
        SourceSet({"a": a, "c": Dataset.from_dict({"x": [1]})})


def test_budget_smaller_than_global_batch_is_rejected():
    with pytest.raises(ValueError, match="fewer than one global batch of 64"):
        ComputeBudget(50).check_covers_batch(64)
    assert ComputeBudget(1000).epochs(250) == 4.0


@settings(max_examples=80, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(1, 40), st.floats(0.0, 1.0)), min_size=1, max_size=5),
    num_samples=st.integers(1, 300),
    seed=st.integers(0, 1000),
)
def test_property_exact_budget_and_every_index_inside_its_selected_source(data, num_samples, seed):
    sizes, ratios = [d[0] for d in data], [d[1] for d in data]
    try:
        chosen = selected_indices(sizes, ratios, seed)
    except ValueError:
        assert sum(round(r * n) for n, r in zip(sizes, ratios)) == 0
        return
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    allowed = {int(offsets[j] + i) for j, idx in enumerate(chosen) for i in idx}
    order = list(SourceMixtureSampler(sizes, ratios, num_samples=num_samples, seed=seed))
    assert len(order) == num_samples
    assert set(order) <= allowed
    for j, idx in enumerate(chosen):
        assert len(idx) == round(ratios[j] * sizes[j]) and len(set(idx)) == len(idx)
        assert all(0 <= i < sizes[j] for i in idx)


def test_selection_aware_batches_split_each_source_into_selected_and_left_out_examples():
    from cads_hf.sources import SelectionAwareSampler, selection_ranks

    sizes, ratios = [40, 100, 60], [0.25, 1.0, 0.0]
    asked = []

    def ratios_for(batch_index):
        asked.append(batch_index)
        return ratios

    sampler = SelectionAwareSampler(sizes, batch_size=12, ratios=ratios_for, num_samples=120, seed=4)
    order = np.array(list(sampler))
    ranks = selection_ranks(sizes, seed=4)
    source = np.searchsorted(np.cumsum(sizes), order, side="right")
    kept = np.round(np.array(ratios) * sizes)[source]
    for batch_source, batch_seen in zip(source.reshape(-1, 12), (ranks[order] < kept).reshape(-1, 12)):
        assert np.bincount(batch_source, minlength=3).tolist() == [4, 4, 4]
        assert batch_seen[batch_source == 0].sum() == 2  # half selected, half left out
        assert batch_seen[batch_source == 1].all() and not batch_seen[batch_source == 2].any()
    assert asked == list(range(10))
    sampler.set_epoch(1)
    list(sampler)
    assert asked[10:] == list(range(10, 20))  # batch indices run on across epochs


def test_batched_reads_return_the_rows_of_single_reads_in_the_order_asked():
    from cads_hf.final_training import SequenceDataset
    from cads_hf.trainer import _TaggedSourceSet

    def doubled(batch):  # a batch transform, as the vision sources attach one
        return {**batch, "x": [2 * x for x in batch["x"]]}

    a = Dataset.from_dict({"x": [1, 2, 3], "labels": [0, 1, 0]}).with_transform(doubled)
    b = [{"x": 40, "labels": 1}, {"x": 50, "labels": 0}]  # a plain sequence has no __getitems__: read row by row
    indices = [4, 0, 3, 2, 0]
    for dataset in (SourceSet({"a": a, "b": b}), _TaggedSourceSet({"a": a, "b": b})):
        rows = dataset.__getitems__(indices)
        assert rows == [dataset[i] for i in indices]
        assert [row["x"] for row in rows] == [50, 2, 40, 6, 2]
    view = SequenceDataset(SourceSet({"a": a, "b": b}), [3, 1, 4])
    assert view.__getitems__([2, 0, 1]) == [view[2], view[0], view[1]]


def test_trainer_reads_each_batch_in_one_call_per_source(tmp_path):
    from transformers import TrainingArguments

    from cads_hf.final_training import train_for_budget

    from toy import ToyClassifier, toy_sources

    sources, _ = toy_sources(sizes=(40, 40), noise=(0.0, 0.5))
    calls = []

    class Counted(Dataset):
        def __getitems__(self, keys):
            calls.append(len(keys))
            return super().__getitems__(keys)

    counted = {name: Counted(source.data) for name, source in sources.items()}
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to="none", use_cpu=True)
    train_for_budget(ToyClassifier(), SourceSet(counted), list(range(0, 80, 2)), args)
    assert sum(calls) == 40 and len(calls) <= 2 * 5  # 5 batches of 8, each at most one read per source


def test_cached_rows_read_each_row_once_and_hand_out_copies():
    reads = []

    class Counted(Dataset):
        def __getitems__(self, keys):
            reads.extend(keys)
            return super().__getitems__(keys)

    plain = Dataset.from_dict({"x": [10, 11, 12, 13], "labels": [0, 1, 0, 1]})
    cached = CachedRows(Counted(plain.data))
    assert cached.__getitems__([2, 0, 2]) == [plain[2], plain[0], plain[2]] and sorted(reads) == [0, 2]
    row = cached[1]
    row["x"] = -1  # a collator reassigning a key (as DataCollatorForSeq2Seq pads labels) changes no later read
    assert cached.__getitems__([0, 1, 3]) == [plain[0], plain[1], plain[3]] and sorted(reads) == [0, 1, 2, 3]
    assert len(cached) == 4
