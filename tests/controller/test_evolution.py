import pytest

from controller.objective import ObjectiveConfig
from controller.policies import EvolutionConfig, EvolutionPolicy, Feedback
from controller.spaces import NB201Space


def test_population_ages_out_the_oldest_and_children_mutate_one_edge():
    space = NB201Space()
    policy = EvolutionPolicy(EvolutionConfig(population_size=4, tournament_size=4), seed=0)
    first = policy.ask(4, space)  # random until the population is full
    policy.tell([Feedback(p.architecture, 0, r) for p, r in zip(first, [0.1, 0.9, 0.2, 0.3], strict=True)], space)
    child = policy.ask(1, space)[0].architecture
    # Tournament over the whole population picks the 0.9 parent; the child differs on one edge.
    parent = first[1].architecture
    assert sum(a != b for a, b in zip(parent["edges"], child["edges"], strict=True)) == 1
    policy.tell([Feedback(child, 0, 0.5)], space)
    rewards = [r for _, r in policy.population]
    assert rewards == [0.9, 0.2, 0.3, 0.5]  # the oldest (0.1) died, though not the worst


def test_random_start_is_uniform_enough():
    space = NB201Space()
    policy = EvolutionPolicy(EvolutionConfig(population_size=1000), seed=1)
    ops = [op for p in policy.ask(500, space) for op in p.architecture["edges"]]
    counts = {op: ops.count(op) for op in set(ops)}
    assert len(counts) == 5 and min(counts.values()) > 0.15 * len(ops)


def test_the_tournament_picks_the_parent_with_the_best_objective_not_the_best_accuracy():
    space = NB201Space()
    hard = ObjectiveConfig("flops", 1e8, hard=True)
    policy = EvolutionPolicy(EvolutionConfig(population_size=2, tournament_size=2), seed=0, objective=hard)
    heavy, lean = (p.architecture for p in policy.ask(2, space))
    policy.tell(
        [
            Feedback(heavy, 0, 0.93, metrics={"flops": 4e8}),  # the most accurate, four times over the target
            Feedback(lean, 0, 0.85, metrics={"flops": 5e7}),
        ],
        space,
    )
    assert [fitness for _, fitness in policy.population] == [pytest.approx(0.93 / 4), 0.85]
    child = policy.ask(1, space)[0].architecture
    assert sum(a != b for a, b in zip(lean["edges"], child["edges"], strict=True)) == 1  # a mutant of the lean one
