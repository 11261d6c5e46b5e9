"""The partitioned layout (ehr/partitions.py), partitioned cohorts and the streaming synthetic generator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehr.cohort import Cohort, cohort_partitions
from ehr.partitions import (PartitionedTable, PartitionError, PartitionWriter, bucket_of, part_name,
                            parts_directory, write_part, write_partitioned)
from ehr.synthetic import generate_chunks, generate_cohort, write_synthetic

# the reference sequence of splitmix64 seeded with 0 (Vigna's splitmix64.c): next() adds the golden
# gamma to the state and mixes it, so its outputs are our hash of 0 and of the gamma itself
_GAMMA = 0x9E3779B97F4A7C15
_SPLITMIX64_SEED0 = (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4)


def _as_int64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def test_bucket_is_splitmix64_of_the_stay_id():
    modulus = 1 << 62  # bucket_of is the hash mod partitions; a power of two keeps its low bits
    got = bucket_of(np.array([0, _as_int64(_GAMMA)]), modulus)
    assert got.tolist() == [h % modulus for h in _SPLITMIX64_SEED0]


def test_consecutive_ids_spread_evenly():
    counts = np.bincount(bucket_of(np.arange(200_000, 210_000), 8), minlength=8)
    assert counts.min() > 0.9 * 1250 and counts.max() < 1.1 * 1250


def test_table_round_trip_keeps_whole_stays(tmp_path):
    stays = generate_cohort(40, seed=2).stays
    t = PartitionedTable(write_partitioned(stays, tmp_path / "stays", "stays", 5))
    assert t.partitions == 5 and t.rows == 40
    parts = [t.read(k) for k in range(5)]
    assert all((bucket_of(p.stay_id, 5) == k).all() for k, p in enumerate(parts))
    back = pd.concat(parts).sort_values("stay_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, stays)


def test_a_stay_in_the_wrong_part_is_an_error_naming_file_and_stay(tmp_path):
    stays = generate_cohort(20, seed=2).stays
    d = write_partitioned(stays, tmp_path / "stays", "stays", 4)
    wrong = stays.loc[bucket_of(stays.stay_id, 4) == 1]
    write_part(wrong, d, "stays", 0)  # part 0 now holds part 1's stays
    with pytest.raises(PartitionError, match=rf"part-00000.parquet: stay_id {wrong.stay_id.iloc[0]} at row 0 "
                                             r"belongs to part 1 of 4, not 0"):
        PartitionedTable(d).read(0)


def test_a_missing_part_is_an_error_not_a_smaller_table(tmp_path):
    d = write_partitioned(generate_cohort(20, seed=2).stays, tmp_path / "stays", "stays", 4)
    (d / part_name(2)).unlink()
    with pytest.raises(PartitionError, match="1 of 4 part.s. missing .part-00002.parquet.; the table is incomplete"):
        PartitionedTable(d)


def test_an_interrupted_write_leaves_nothing_under_the_final_name(tmp_path):
    stays = generate_cohort(10, seed=2).stays
    with pytest.raises(RuntimeError), PartitionWriter(tmp_path / "stays", "stays", 3) as w:
        w.write(stays)
        raise RuntimeError("interrupted")
    assert not (tmp_path / "stays").exists() and not list(tmp_path.iterdir())
    with pytest.raises(PartitionError, match="2 part.s. were not written"), \
            parts_directory(tmp_path / "out", "stays", 3) as tmp:
        write_part(stays, tmp, "stays", 0)
    assert not (tmp_path / "out").exists()


def test_partitioned_cohort_holds_the_same_tables(tmp_path):
    cohort = generate_cohort(30, seed=6)
    d = cohort.save(tmp_path / "c", partitions=4)
    assert cohort_partitions(d) == 4 and cohort_partitions(cohort.save(tmp_path / "u")) is None
    assert json.loads((d / "cohort.json").read_text())["partitions"] == 4
    back = Cohort.load(d)
    for name, table in cohort.tables().items():
        keys = ["stay_id"] + (["time", "code"] if name == "events" else ["study_id"] if name == "cxr" else [])
        got = getattr(back, name).sort_values(keys, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, table.sort_values(keys, kind="stable").reset_index(drop=True), obj=name)
    part = Cohort.load_partition(d, 3)
    ids = set(part.stays.stay_id)
    assert ids == set(cohort.stays.stay_id[bucket_of(cohort.stays.stay_id, 4) == 3])
    assert set(part.events.stay_id) <= ids and set(part.cxr.stay_id) <= ids
    with pytest.raises(ValueError, match="not partitioned"):
        Cohort.load_partition(tmp_path / "u", 0)


def _sorted(c: Cohort, name: str) -> pd.DataFrame:
    keys = {"events": ["stay_id", "time", "code"], "cxr": ["study_id"]}.get(name, ["stay_id"])
    return getattr(c, name).sort_values(keys, kind="stable").reset_index(drop=True)


def test_streamed_cohort_is_the_same_whatever_the_partitioning(tmp_path):
    a = Cohort.load(write_synthetic(tmp_path / "a", 25, seed=9, partitions=3, chunk_stays=10))
    b = Cohort.load(write_synthetic(tmp_path / "b", 25, seed=9, partitions=7, chunk_stays=10))
    for name in ("events", "stays", "cxr", "truth"):
        pd.testing.assert_frame_equal(_sorted(a, name), _sorted(b, name), obj=name)
    assert a.meta == b.meta and a.meta["chunk_stays"] == 10
    assert a.stays.stay_id.sort_values().tolist() == list(range(200_000, 200_025))
    assert a.cxr.study_id.is_unique
    # chunk 0 is generate_cohort's own cohort; later chunks draw from their own seeds
    chunks = list(generate_chunks(25, seed=9, chunk_stays=10))
    assert [len(c.stays) for c in chunks] == [10, 10, 5]
    whole = generate_cohort(10, seed=9)
    for name in ("events", "stays", "cxr", "truth"):
        pd.testing.assert_frame_equal(getattr(chunks[0], name), getattr(whole, name), obj=name)
    assert not chunks[1].events.numeric_value.head(50).equals(chunks[0].events.numeric_value.head(50))
