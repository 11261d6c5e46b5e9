"""The synthetic cohort a chunk of stays at a time, written straight to the partitioned layout.

:func:`generate_chunks` draws the cohort in chunks of ``chunk_stays`` stays: chunk 0 from
``default_rng(seed)``, chunk ``k >= 1`` from ``default_rng([seed, k])``, each with the stay, subject
and study ids that follow the previous chunk's. Its cohort depends on ``(n_stays, seed,
chunk_stays, start)`` only, never on how it is partitioned or stored; a cohort of at most
``chunk_stays`` stays is exactly :func:`ehr.synthetic.generate_cohort`'s (same draws, same ids).
Larger cohorts differ from ``generate_cohort``'s (which draws every stay from one generator,
kept byte-identical for the stored-hash test): each chunk spreads its admissions over the same
year.

:func:`write_synthetic` streams the chunks into a :class:`ehr.cohort.CohortWriter`, so memory is
bounded by one chunk (about 5,000 stays: a few hundred MB) whatever ``n_stays``:
``sepsiscope simulate --n-stays 200000 --partitions 64`` never holds the cohort.

Examples
--------
>>> import tempfile, pathlib
>>> from ehr.cohort import Cohort
>>> from ehr.synthetic import generate_cohort
>>> d = pathlib.Path(tempfile.mkdtemp()) / "c"
>>> _ = write_synthetic(d, 30, seed=3, partitions=4, chunk_stays=10)
>>> c = Cohort.load(d)
>>> c.meta["chunk_stays"], len(c.stays), sorted(c.stays.stay_id)[:2]
(10, 30, [200000, 200001])
>>> small = next(generate_chunks(10, seed=3, chunk_stays=10))
>>> small.events.equals(generate_cohort(10, seed=3).events)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort, CohortWriter
from ehr.synthetic.cohort import GENERATOR_VERSION, _generate

__all__ = ["generate_chunks", "write_synthetic", "DEFAULT_CHUNK_STAYS"]

#: Stays per chunk: large enough for the vectorised generator to run at full speed (~2 s per
#: 5,000 stays), small enough to bound memory.
DEFAULT_CHUNK_STAYS = 5000


def chunk_rng(seed: int, k: int) -> np.random.Generator:
    """The generator of chunk ``k`` (chunk 0 draws as :func:`~ehr.synthetic.generate_cohort` does)."""
    return np.random.default_rng(seed if k == 0 else [int(seed), int(k)])


def generate_chunks(n_stays: int, seed: int = 0, *, chunk_stays: int = DEFAULT_CHUNK_STAYS,
                    start="2024-01-01") -> Iterator[Cohort]:
    """Yield the cohort of ``n_stays`` stays as :class:`~ehr.cohort.Cohort` chunks of ``chunk_stays`` stays."""
    if int(n_stays) < 1 or int(chunk_stays) < 1:
        raise ValueError(f"n_stays and chunk_stays must be >= 1, got {n_stays} and {chunk_stays}")
    start_ts = pd.Timestamp(start)
    first_study = 0
    for k, first in enumerate(range(0, int(n_stays), int(chunk_stays))):
        size = min(int(chunk_stays), int(n_stays) - first)
        chunk = _generate(size, chunk_rng(seed, k), start_ts, first_stay=first, first_study=first_study)
        first_study += len(chunk.cxr)
        yield chunk


def write_synthetic(directory, n_stays: int, seed: int = 0, *, partitions: int,
                    chunk_stays: int = DEFAULT_CHUNK_STAYS, start="2024-01-01", progress=None) -> Path:
    """Generate the chunked cohort into ``directory`` (partitioned layout), one chunk in memory at a time.

    ``progress``: called as ``progress(stays_done, n_stays)`` after each chunk.
    Returns the directory; its ``cohort.json`` meta says ``chunk_stays``.
    """
    done = 0
    with CohortWriter(directory, partitions) as w:
        for chunk in generate_chunks(n_stays, seed, chunk_stays=chunk_stays, start=start):
            w.write(chunk)
            done += len(chunk.stays)
            if progress is not None:
                progress(done, int(n_stays))
        w.meta = {"source": "synthetic", "generator": "ehr.synthetic", "version": GENERATOR_VERSION,
                  "n_stays": int(n_stays), "seed": int(seed), "start": str(pd.Timestamp(start)),
                  "chunk_stays": int(chunk_stays)}
    return Path(directory)
