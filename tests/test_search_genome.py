"""The genome: searched action names -> gene spaces, and a gene vector decoded once into its schedule."""

import numpy as np
import pytest

from ecad.schedule import FORECAST, RECOMPUTE, REUSE, BlockGroup, BlockLayout, CacheSchedule, ScheduleError
from ecad.search.genome import ACTIONS, Genome, parse_actions
from ecad.search.optimizer.space import BitSpace, IntegerSpace

LAYOUT = BlockLayout((BlockGroup("transformer_blocks", 4, ("attn1", "attn2", "ff")),))
STEPS = 6


def test_parse_actions_is_canonical_and_names_what_is_wrong():
    assert parse_actions("skip, reuse,forecast") == ("reuse", "forecast", "skip")
    assert parse_actions(["guidance", "reuse"]) == ("reuse", "guidance")
    assert set(parse_actions(",".join(ACTIONS))) == set(ACTIONS)
    with pytest.raises(ValueError, match="teleport"):
        parse_actions("reuse,teleport")
    with pytest.raises(ValueError, match="need reuse or forecast beside skip"):
        parse_actions("skip")


def test_reuse_only_is_the_v1_bit_space_and_the_rest_integer_segments():
    v1 = Genome(LAYOUT, STEPS)
    assert v1.space == BitSpace((STEPS, 4, 3)) and v1.genes.actions == (REUSE, RECOMPUTE)
    full = Genome(LAYOUT, STEPS, ("guidance", "skip", "forecast", "reuse"))
    assert full.actions == ACTIONS
    assert full.space == IntegerSpace((((STEPS - 1) * 4 * 3, 0, 2, RECOMPUTE), ((STEPS - 1) * 4, 0, 1, 0),
                                       (STEPS - 1, 0, 1, 0)))
    assert full.space.n_var == full.genes.num_genes
    assert full.with_actions("reuse") == v1


def test_a_gene_vector_is_decoded_once_and_keyed_by_its_schedules_hash(monkeypatch):
    genome = Genome(LAYOUT, STEPS, ("reuse", "forecast", "skip"))
    calls = []
    decode = type(genome.genes).from_genes
    monkeypatch.setattr(type(genome.genes), "from_genes", lambda self, genes: calls.append(1) or decode(self, genes))
    genes = genome.space.random(3, seed=0)
    first = [genome.decode(g) for g in genes]
    again = [genome.decode(np.array(g, dtype=np.int8)) for g in genes]  # equal genes, another array and dtype
    assert len(calls) == 3 and all(a is b for a, b in zip(first, again))
    assert [genome.key(g) for g in genes] == [s.hash for s in first] and len(calls) == 3
    for schedule in first:
        schedule.validate(layout=LAYOUT, num_steps=STEPS)
        assert genome.decode(genome.encode(schedule)) == schedule
    assert genome.decode(genome.space.all_recompute()) == CacheSchedule.full(LAYOUT, STEPS)


def test_a_schedule_decoded_in_a_narrower_genome_encodes_in_a_wider_one():
    narrow, wide = Genome(LAYOUT, STEPS), Genome(LAYOUT, STEPS, ("reuse", "forecast", "skip", "guidance"))
    for genes in narrow.space.random(4, seed=1):
        schedule = narrow.decode(genes)
        assert wide.key(wide.encode(schedule)) == narrow.key(genes) == schedule.hash
    per_step = 4 * 3
    actions = np.r_[np.full(per_step, RECOMPUTE), np.full(wide.genes.num_action_genes - per_step, FORECAST)]
    forecasting = wide.decode(np.r_[actions, np.zeros(wide.genes.num_genes - wide.genes.num_action_genes, int)])
    assert (forecasting.actions[2:] == FORECAST).all(), "steps 0 and 1 recompute: a forecast from step 2 on"
    with pytest.raises(ScheduleError, match="forecast"):
        narrow.encode(forecasting)
