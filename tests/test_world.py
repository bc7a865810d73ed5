from itertools import islice

from lifelong.data.world import RELATIONS, World, WorldConfig


def test_deterministic():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    assert [a.record(i) for i in (0, 5, 10_000, 1_999_999)] == [b.record(i) for i in (0, 5, 10_000, 1_999_999)]
    assert World(WorldConfig(seed=4)).record(0) != a.record(0)


def test_scales_to_two_million_distinct_records():
    world = World()
    assert len(world) >= 2_000_000
    # distinct (subject, relation) keys over a large window, and no edit target equals the true object
    keys = set()
    for r in world.records(0, 100_000):
        keys.add((r.subject, r.extras["relation"]))
        assert r.target != r.ground_truth
    assert len(keys) == 100_000
    tail = list(world.records(1_999_000, 2_000_000))
    assert len({(r.subject, r.extras["relation"]) for r in tail}) == 1000


def test_template_coverage_and_roles():
    world = World()
    cfg = world.config
    sentences = set(world.pretraining_sentences())
    assert len(sentences) == world.n_known_subjects * cfg.relations * cfg.templates
    for r in world.records(0, world.n_known_edits):
        assert r.extras["known"]
        templates = RELATIONS[r.extras["relation"]][0]
        assert r.prompt == templates[0].format(r.subject)
        assert r.rephrase in {t.format(r.subject) for t in templates[1 : cfg.templates]}
        # the true fact is taught under the prompt and the rephrase; the edit target never is
        assert f"{r.prompt} {r.ground_truth}" in sentences and f"{r.rephrase} {r.ground_truth}" in sentences
        assert f"{r.prompt} {r.target}" not in sentences
        assert f"{r.locality_prompt} {r.locality_answer}" in sentences
    assert not world.record(world.n_known_edits).extras["known"]


def test_locality_and_pool_are_disjoint_from_edits():
    world = World()
    edited_subjects = {r.subject for r in world.records(0, world.n_known_edits)}
    loc_prompts = {r.locality_prompt for r in world.records(0, world.n_known_edits)}
    pool_prompts = {p for p, _ in world.locality_pool()}
    assert not any(s in p for s in edited_subjects for p in islice(iter(loc_prompts | pool_prompts), 200))
    assert not loc_prompts & pool_prompts


def test_length_bucketed_batches_cover_every_sentence_once_with_similar_lengths():
    import torch

    from lifelong.pipeline.testbed import _length_bucketed_batches

    gen = torch.Generator().manual_seed(0)
    lengths = torch.cat([torch.full((300,), 10), torch.full((100,), 80)])[torch.randperm(400, generator=gen)]
    batches = _length_bucketed_batches(lengths, batch_size=16, gen=gen, window=8)
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(400))
    mixed = sum(1 for b in batches if len(set(lengths[b].tolist())) > 1)
    assert mixed <= 400 // (16 * 8) + 1          # at most one mixed batch per window
    assert all(len(b) <= 16 for b in batches)
