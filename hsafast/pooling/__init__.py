"""Gated-attention (ABMIL) pooling of tile embeddings, fused and streaming-capable.

`gated_attention_pool` pools a whole bag at once; `PoolState` absorbs tiles as they arrive and
merges shards; `GatedAttentionParams` holds the head's weights (safetensors in and out).
"""

from hsafast.pooling.dispatch import gated_attention_pool
from hsafast.pooling.params import GatedAttentionParams
from hsafast.pooling.state import PoolState

__all__ = ["GatedAttentionParams", "PoolState", "gated_attention_pool"]
