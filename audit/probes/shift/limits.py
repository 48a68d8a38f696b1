"""`limit` and `lens_limit` for the shift probe: the shared seeded stratified sample (audit.probes.sampling),
taken per slice, because every slice is reported on its own (its own divergence statistics)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..sampling import SampleRecord, stratified_sample
from .corpora import Corpus, CorpusItem


def sample_slices(corpora: list[Corpus], limit: Optional[int], seed: int) -> tuple[list[Corpus], SampleRecord]:
    """Each slice cut to a sample of `limit` texts stratified over its groups; one record for all."""
    out, records = [], []
    for corpus in corpora:
        items, record = stratified_sample(corpus.items, limit, seed, strata=lambda it: (it.group or "",),
                                          levels=("group",))
        out.append(dataclasses.replace(corpus, items=items))
        records.append(record)
    strategy = records[0].strategy if records and limit is not None else "all items"
    total = SampleRecord(limit=limit, strategy=f"per slice: {strategy}", strata=("slice", "group"),
                         n_available=sum(r.n_available for r in records), n_items=sum(r.n_items for r in records),
                         n_strata=sum(r.n_strata for r in records), seed=int(seed))
    return out, total


def sample_prompts(items: list[CorpusItem], limit: Optional[int], seed: int) -> list[CorpusItem]:
    """The prompts for the logit lens and watch-list mass, stratified over their groups."""
    return stratified_sample(items, limit, seed, strata=lambda it: (it.group or "",))[0]
