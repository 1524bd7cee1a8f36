"""The per-version cache of embeddings and scores: what a resumed round reuses instead of scoring again."""

import numpy as np

from mlproject.loop.embeddings import EmbeddingCache


def test_scores_and_embeddings_survive_a_save_and_a_changed_image_is_scored_again(tmp_path):
    cache = EmbeddingCache(tmp_path / "v1" / "project.npz")
    cache.put(1, "/data/a.png", np.arange(4, dtype=np.float32), 0.25)
    cache.put(2, "/data/b.png", np.ones(4, dtype=np.float32))  # an embedding without a score
    cache.save()

    again = EmbeddingCache(tmp_path / "v1" / "project.npz")
    assert again.p_defect(1, "/data/a.png") == 0.25
    assert np.array_equal(again.get(1, "/data/a.png"), np.arange(4, dtype=np.float32))
    assert again.p_defect(2, "/data/b.png") is None and again.get(2, "/data/b.png") is not None
    assert again.p_defect(1, "/data/a-replaced.png") is None  # another URL: another image
    again.put(1, "/data/a.png", np.zeros(4, dtype=np.float32))  # re-embedded without a score: the old one goes
    assert again.p_defect(1, "/data/a.png") is None


def test_a_cache_written_before_scores_were_kept_still_loads(tmp_path):
    path = tmp_path / "old.npz"
    with path.open("wb") as handle:
        np.savez(handle, ids=np.array([7]), urls=np.array(["/data/c.png"]), vectors=np.ones((1, 3), np.float16))
    cache = EmbeddingCache(path)
    assert len(cache) == 1 and cache.get(7, "/data/c.png") is not None and cache.p_defect(7, "/data/c.png") is None
