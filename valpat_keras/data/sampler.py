"""P x K identity sampler for metric-learning re-ID batches (triplet loss needs positives).

Every batch holds P distinct identities with K images each. Within an identity the images are
taken round-robin over its cameras, so a batch's positives come from different cameras when
the identity has them. Pure NumPy and deterministic per ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PKSampler:
    """Draws epochs of ``(num_batches, P * K)`` record indices.

    An epoch is ``rounds`` passes over the identities; each pass shuffles them and cuts them
    into batches of P (the fewer than P left over sit that pass out, different ones each pass),
    so every identity appears ``rounds`` times per epoch, or once fewer. ``rounds`` is chosen so
    an epoch shows about as many images as the training set has. Each appearance takes the
    identity's next K images from a per-epoch camera round-robin order, cycling when it runs
    out; only an identity with fewer than K images is sampled with replacement.

    Args:
        pids: Person id of every record (any integers).
        camids: Camera id of every record, or ``None`` (one camera).
        p: Identities per batch.
        k: Images per identity.
        seed: Base seed; epoch ``e`` uses ``(seed, e)``.

    Example:
    ```python
    sampler = PKSampler(pids_of(dataset.train), camids_of(dataset.train), p=16, k=4)
    batches = sampler.epoch_indices(epoch=0)  # (sampler.num_batches, 64) int64
    ```
    """

    def __init__(self, pids: Sequence[int] | np.ndarray, camids: Sequence[int] | np.ndarray | None = None,
                 p: int = 16, k: int = 4, seed: int = 0):
        pids = np.asarray(pids, dtype=np.int64).reshape(-1)
        camids = (np.zeros_like(pids) if camids is None
                  else np.asarray(camids, dtype=np.int64).reshape(-1))
        if camids.shape != pids.shape:
            raise ValueError(f"camids has {camids.size} entries but pids has {pids.size}")
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be positive; got p={p}, k={k}")
        self.pids, self.camids = pids, camids
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.identities = np.unique(pids)
        if len(self.identities) < self.p:
            raise ValueError(f"a batch needs p={self.p} distinct identities but the records have "
                             f"only {len(self.identities)}; lower p")
        # Per identity: the record indices of each of its cameras.
        self._by_camera = []
        for pid in self.identities:
            members = np.flatnonzero(pids == pid)
            self._by_camera.append([members[camids[members] == cam]
                                    for cam in np.unique(camids[members])])
        self.rounds = max(1, round(len(pids) / (len(self.identities) * self.k)))

    @property
    def batch_size(self) -> int:
        """Images per batch, P * K."""
        return self.p * self.k

    @property
    def num_batches(self) -> int:
        """Batches per epoch (the same for every epoch)."""
        return self.rounds * (len(self.identities) // self.p)

    def __len__(self) -> int:
        return self.num_batches

    def _camera_round_robin(self, cameras: list[np.ndarray], rng: np.random.Generator
                            ) -> np.ndarray:
        """One identity's images: shuffled per camera, then interleaved camera by camera."""
        queues = [rng.permutation(members) for members in cameras]
        queues = [queues[i] for i in rng.permutation(len(queues))]
        longest = max(len(q) for q in queues)
        return np.asarray([q[j] for j in range(longest) for q in queues if j < len(q)])

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The batches of one epoch.

        Args:
            epoch: Epoch number; the same ``(seed, epoch)`` always gives the same batches.

        Returns:
            ``int64`` array ``(num_batches, P * K)``; row ``b`` holds P groups of K indices,
            each group one identity.
        """
        rng = np.random.default_rng([self.seed, int(epoch)])
        orders = [self._camera_round_robin(cams, rng) for cams in self._by_camera]
        cursors = np.zeros(len(orders), dtype=np.int64)
        per_round = len(self.identities) // self.p
        batches = []
        for _ in range(self.rounds):
            chosen = rng.permutation(len(self.identities))[: per_round * self.p]
            for group in chosen.reshape(per_round, self.p):
                batch = []
                for ident in group:
                    order = orders[ident]
                    if len(order) < self.k:
                        extra = rng.choice(order, self.k - len(order), replace=True)
                        batch.append(np.concatenate([order, extra]))
                        continue
                    take = (cursors[ident] + np.arange(self.k)) % len(order)
                    cursors[ident] = (cursors[ident] + self.k) % len(order)
                    batch.append(order[take])
                batches.append(np.concatenate(batch))
        return np.asarray(batches, dtype=np.int64).reshape(self.num_batches, self.batch_size)
