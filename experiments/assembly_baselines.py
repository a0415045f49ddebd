"""Molecular assembly on the offline proxy, before any training: what the
trivial predictions score, and where the motion lies across the bands.

On the 17-molecule clusters cut from pyxtal's crystals
(kflow_jax/data/crystal_clusters.py, `DRAWS` seeded starts per crystal):

  - AssembleFlow's metrics (kflow_jax/evaluators/assembly.py) of two
    predictions that need no model: `identity` (the start itself, the
    trivial baseline every learnt method must beat) and `truth` (the
    packing itself: PM 0, and the collision floor that short bonds inside
    a molecule leave);
  - the share of the centroid motion |P_b dc|^2 / |dc|^2 and of the
    rotation-vector field in each graph-Fourier band of the start
    (kflow_jax/kamp/molecular.py, bands {0}, {1-3}, {4-8}, {9-16}).

    python -m experiments.assembly_baselines [--quick] [--out=DIR]
"""
import numpy as np

from experiments import common

DRAWS = 3


def run(scale, root, out_dir) -> dict:
  del root  # nothing is trained or cached
  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  from kflow_jax.data import atoms
  from kflow_jax.data import crystal_clusters
  from kflow_jax.evaluators import assembly
  from kflow_jax.flow import rigid
  from kflow_jax.kamp import molecular
  # pylint: enable=g-import-not-at-top
  draws = DRAWS if scale.all_arms else 1
  clusters = crystal_clusters.load(seed=0, draws=draws)
  if not scale.all_arms:
    clusters = clusters[:5]
  scores = {"identity": {}, "truth": {}}
  shares_c, shares_w = [], []
  for cl in clusters:
    for name, pred in (("identity", cl.initial), ("truth", cl.final)):
      scores[name][cl.id] = [assembly.cluster_metrics(
          cl.final, pred, cl.numbers, cl.molecule)]
    c0 = assembly.centroids(cl.initial, cl.molecule)
    c1 = assembly.centroids(cl.final, cl.molecule)
    # Each molecule's rotation from start to packing (Kabsch on its atoms).
    rot = np.stack([atoms.kabsch(cl.initial[cl.molecule == i],
                                 cl.final[cl.molecule == i])[0]
                    for i in range(len(c0))])
    omega = np.asarray(rigid.log_so3(jnp.asarray(rot, jnp.float32)))
    p = molecular.band_projectors(c0)
    for field, out in ((c1 - c0, shares_c), (omega, shares_w)):
      parts = molecular.band_parts(p, field)
      energy = np.sum(np.square(parts), axis=(1, 2))
      out.append(energy / max(float(np.sum(np.square(field))), 1e-12))
  agg = {name: assembly.aggregate(per) for name, per in scores.items()}
  mean = lambda v: np.mean(np.stack(v), 0).tolist()
  data = {"scale": scale._asdict(), "clusters": len(clusters),
          "draws_per_crystal": draws, "metrics": agg,
          "band_share_centroids": mean(shares_c),
          "band_share_rotations": mean(shares_w)}
  keys = ("pm_center", "pm_atom", "valid_center", "collision", "separation")
  rows = [[name] + [f"{agg[name][k]:.3g}" for k in keys] for name in agg]
  md = [
      "# Molecular assembly on the offline proxy: trivial predictions and "
      "band shares", "",
      f"{len(clusters)} clusters ({draws} seeded starts per crystal of "
      "pyxtal's database, `kflow_jax/data/crystal_clusters.py`), scored with "
      "AssembleFlow's metrics (`kflow_jax/evaluators/assembly.py`). Produced "
      "by `python -m experiments.assembly_baselines`.", "",
      common.table(["prediction"] + list(keys), rows), "",
      "`identity` predicts the start itself: a learnt model must beat it. "
      "`truth` predicts the packing: PM is 0, and its collision is the floor "
      "that the diagonal and the short bonds inside each molecule leave.", "",
      "Share of the motion in each graph-Fourier band of the start "
      "(bands {0}, {1-3}, {4-8}, {9-16}; mean over clusters):", "",
      common.table(["field"] + [f"band {b}" for b in range(
          len(data["band_share_centroids"]))],
                   [["centroid displacement"] + [
                       f"{v:.3g}" for v in data["band_share_centroids"]],
                    ["rotation vectors"] + [
                        f"{v:.3g}" for v in data["band_share_rotations"]]]),
      "",
      "The proxy's start is ours (centroids pushed out 1.5x with 1.5 A "
      "jitter, random orientations), so these shares describe that start, "
      "not COD-Cluster17's."]
  common.write_result(out_dir, "assembly_baselines", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
