"""PoolState: the online-softmax state of gated-attention pooling, for streams and shards.

The state is (m, s, acc): the largest logit seen, the sum of exp(logit - m) and the sum of
exp(logit - m) * h_i, in float64. Tiles are absorbed as they arrive (`update`), partial states
of shards merge by rescaling both to the larger m (`merge`, as Flash-Decoding combines
partial softmax results), and `result` divides once at the end. The outcome does not depend
on the order of tiles or the split into shards, up to floating-point rounding. States save to
safetensors, so shards pooled in different processes or machines can be merged later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.errors import PoolingError
from hsafast.pooling.cpu import absorb_cpu, default_chunk
from hsafast.pooling.engines import as_torch_if_device_array, resolve_engine
from hsafast.pooling.params import GatedAttentionParams

_FORMAT = "hsafast.PoolState"


def empty_state(dim: int) -> np.ndarray:
    """[m, s, acc(D)] of no rows: m = -inf, s = 0, acc = 0."""
    state = np.zeros(dim + 2, dtype=np.float64)
    state[0] = -np.inf
    return state


def merge_states(a: np.ndarray, b: np.ndarray) -> None:
    """Merges state b into state a in place."""
    if b[1] == 0.0:
        return
    if a[1] == 0.0:
        a[:] = b
        return
    m = max(a[0], b[0])
    sa, sb = np.exp(a[0] - m), np.exp(b[0] - m)
    a[1:] = a[1:] * sa + b[1:] * sb
    a[0] = m


def check_rows(h: Any, dim: int, what: str = "h") -> tuple[int, int]:
    """(N, D) of a 2-D h whose width matches the head; PoolingError otherwise."""
    shape = tuple(getattr(h, "shape", ()))
    if len(shape) != 2:
        raise PoolingError(f"{what} must be a 2-D N x D array, got shape {shape}")
    if shape[1] != dim:
        raise PoolingError(f"{what} has D = {shape[1]} columns but the head expects D = {dim}")
    return int(shape[0]), int(shape[1])


class PoolState:
    """Running gated-attention pooling of the rows absorbed so far."""

    def __init__(
        self,
        params: GatedAttentionParams,
        *,
        keep_logits: bool = False,
        engine: str = "auto",
        chunk: int | None = None,
    ) -> None:
        self.params = params
        self.keep_logits = keep_logits
        self.engine = engine
        self.chunk = chunk or default_chunk(params.dim)
        if self.chunk < 1:
            raise PoolingError(f"chunk must be at least 1 row, got {self.chunk}")
        self.state = empty_state(params.dim)
        self.count = 0
        self._next_start = 0
        self._logits: list[tuple[int, np.ndarray]] = []

    @property
    def m(self) -> float:
        """Largest logit absorbed (-inf when empty)."""
        return float(self.state[0])

    @property
    def s(self) -> float:
        """Sum of exp(logit - m) over the absorbed rows."""
        return float(self.state[1])

    @property
    def acc(self) -> np.ndarray:
        """Sum of exp(logit - m) * h_i over the absorbed rows (float64, D)."""
        return self.state[2:]

    def update(self, h_chunk: Any, start: int | None = None) -> PoolState:
        """Absorbs the rows of h_chunk (N x D: NumPy array or torch tensor, any float dtype).

        `start` is the index of its first row in the whole bag (default: right after the
        previous update); only needed for the weights when chunks arrive out of order. An
        update is all or nothing: on NaN/Inf nothing is absorbed and the error names the row.
        """
        h_chunk = as_torch_if_device_array(h_chunk)
        n, _ = check_rows(h_chunk, self.params.dim, "h_chunk")
        start = self._next_start if start is None else int(start)
        if start < 0:
            raise PoolingError(f"start must be >= 0, got {start}")
        if n == 0:
            return self
        engine = resolve_engine(h_chunk, self.engine)
        logits = np.empty(n, dtype=np.float32) if self.keep_logits else None
        if engine == "cpu":
            part = empty_state(self.params.dim)
            absorb_cpu(h_chunk, self.params, part, logits, self.chunk, row_offset=start)
        else:
            part, logits = self._device_part(h_chunk, engine)
        merge_states(self.state, part)
        if logits is not None:
            self._logits.append((start, logits))
        self.count += n
        self._next_start = start + n
        return self

    def _device_part(self, h: Any, engine: str) -> tuple[np.ndarray, np.ndarray | None]:
        if engine == "cuda":
            from hsafast.pooling.cuda import check_state, pool_state_cuda

            st, lg = pool_state_cuda(h, self.params, self.keep_logits)
            part = st.cpu().numpy()
            check_state(part)
            return part, None if lg is None else lg.cpu().numpy()
        import torch

        from hsafast.pooling.engines import is_torch_tensor
        from hsafast.pooling.reference import attention_logits_torch

        if not is_torch_tensor(h):
            h = torch.from_numpy(np.asarray(h))
        a = attention_logits_torch(h.float() if h.dtype != torch.float64 else h, self.params)
        a64 = a.double()
        m = a64.max()
        e = torch.exp(a64 - m)
        part = torch.cat([m[None], e.sum()[None], e @ h.double()]).cpu().numpy()
        if not np.isfinite(part).all():
            raise PoolingError("h contains NaN or Inf (the pooled state is not finite)")
        return part, a.float().cpu().numpy() if self.keep_logits else None

    def merge(self, other: PoolState) -> PoolState:
        """Absorbs another state (of the same head) into this one and returns self."""
        if other.params.fingerprint() != self.params.fingerprint():
            raise PoolingError("cannot merge pool states computed with different parameters")
        merge_states(self.state, other.state)
        self.count += other.count
        if self.keep_logits:
            if other.count and not other._logits:
                raise PoolingError("cannot keep weights: the merged state kept no logits")
            self._logits.extend((s, lg.copy()) for s, lg in other._logits)
        return self

    def logits(self) -> np.ndarray:
        """Logits of all rows in bag order; the chunks' starts must tile 0..count-1."""
        if not self.keep_logits:
            raise PoolingError("this PoolState was created with keep_logits=False")
        out = np.empty(self.count, dtype=np.float32)
        covered = np.zeros(self.count, dtype=bool)
        for start, lg in self._logits:
            stop = start + len(lg)
            if stop > self.count or covered[start:stop].any():
                raise PoolingError(
                    f"rows {start}..{stop - 1} overlap or exceed the {self.count} absorbed rows; "
                    "give each update its start index"
                )
            out[start:stop] = lg
            covered[start:stop] = True
        return out

    def weights(self) -> np.ndarray:
        """Attention weights softmax(logits), from the final max and sum (float32, N)."""
        self._check_nonempty()
        return (np.exp(self.logits().astype(np.float64) - self.m) / self.s).astype(np.float32)

    def result(self, return_weights: bool = False) -> Any:
        """Pooled embedding (float32, D), with the attention weights when asked for."""
        self._check_nonempty()
        pooled = (self.acc / self.s).astype(np.float32)
        return (pooled, self.weights()) if return_weights else pooled

    def _check_nonempty(self) -> None:
        if self.count == 0 or self.s == 0.0:
            raise PoolingError("no rows were pooled: the bag of embeddings is empty")

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays that describe the state completely (for safetensors or any transport)."""
        starts = np.array([s for s, _ in self._logits], dtype=np.int64)
        lengths = np.array([len(lg) for _, lg in self._logits], dtype=np.int64)
        logits = (
            np.concatenate([lg for _, lg in self._logits])
            if self._logits
            else np.zeros(0, np.float32)
        )
        return {
            "state": self.state.copy(),
            "count": np.array([self.count], dtype=np.int64),
            "keep_logits": np.array([int(self.keep_logits)], dtype=np.int64),
            "logit_starts": starts,
            "logit_lengths": lengths,
            "logits": logits.astype(np.float32),
        }

    @classmethod
    def from_dict(
        cls,
        arrays: dict[str, np.ndarray],
        params: GatedAttentionParams,
        path: Path | None = None,
        **kwargs: Any,
    ) -> PoolState:
        """Rebuilds a state from to_dict's arrays; PoolingError if they do not fit the head."""
        try:
            state = np.asarray(arrays["state"], dtype=np.float64)
            count = int(arrays["count"][0])
            keep = bool(int(arrays["keep_logits"][0]))
            starts, lengths = arrays["logit_starts"], arrays["logit_lengths"]
            logits = np.asarray(arrays["logits"], dtype=np.float32)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PoolingError(f"not a pool state: {exc}", path) from exc
        if state.shape != (params.dim + 2,):
            raise PoolingError(f"state has shape {state.shape}, expected ({params.dim + 2},)", path)
        if int(lengths.sum()) != len(logits) or len(starts) != len(lengths):
            raise PoolingError("logit segments do not match the stored logits", path)
        out = cls(params, keep_logits=keep, **kwargs)
        out.state[:] = state
        out.count = count
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        out._logits = [
            (int(s), logits[offsets[i] : offsets[i + 1]].copy()) for i, s in enumerate(starts)
        ]
        out._next_start = max((s + len(lg) for s, lg in out._logits), default=count)
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the state to a safetensors file (atomically), tagged with the head's hash."""
        from safetensors.numpy import save_file

        from hsafast._fileio import atomic_path

        final = Path(path)
        meta = {"format": _FORMAT, "params_sha256": self.params.fingerprint()}
        with atomic_path(final) as tmp:
            save_file(self.to_dict(), str(tmp), metadata=meta)
        return final

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], params: GatedAttentionParams, **kwargs: Any
    ) -> PoolState:
        """Reads a state written by save; it must have been computed with `params`."""
        from safetensors import SafetensorError, safe_open

        src = Path(path)
        if not src.is_file():
            raise PoolingError("pool state file not found", src)
        try:
            with safe_open(str(src), framework="numpy") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise PoolingError(f"not a readable safetensors file: {exc}", src) from exc
        if meta.get("format") != _FORMAT:
            raise PoolingError(f"not a pool state (format {meta.get('format')!r})", src)
        if meta.get("params_sha256") != params.fingerprint():
            raise PoolingError("pool state was computed with different parameters", src)
        return cls.from_dict(arrays, params, src, **kwargs)
