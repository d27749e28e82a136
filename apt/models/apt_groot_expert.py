"""The GR00T-style APT expert under the released design's rules (`FusionConfig.kind = "highway"`).

GR00T N1.5's wiring stays (`groot_expert.py`): the VLM features of one layer go through an adapter
(LayerNorm, Linear, self-attention layers) into a VL context, and a DiT over [state; learned future
tokens; actions] with AdaLN on the flow time alternates cross-attention to that context (even blocks)
and self-attention (odd blocks). The released code builds the pi-style expert only; the paper names a
GR00T-style variant and gives no details. The released rules, and what they become here:

* Interleaving with the copy rule (as released): Stage 1 has `depth` DiT blocks; Stage 2 has
  2 * depth, Stage-1 block i copied to block 2i + 1 (keeping its kind, cross or self), a new block at
  2i. Chosen: every new block is a cross-attention block with the base mask (all valid VL tokens) --
  a new self-attention block would read no VL token and could not let language in.
* Language-isolated prior blocks (as released): the Stage-1 (copied) cross blocks see image tokens
  only. Chosen: the adapter runs with the language-isolated mask (image tokens see image tokens, text
  tokens text tokens), so the context's image rows carry no language in either stage.
* Gated mixing of the VL features the DiT reads (as released: per block, per channel, gates at 0.5):
  after DiT block j, ctx <- sigmoid(g_j) * ctx + (1 - sigmoid(g_j)) * P_j(h_map(j)), with the
  pi-style highway's layer map (Stage-2 block j mixes VLM layer j when 2 * depth == VLM layers).
  Chosen: ctx starts as the adapter output on VLM layer `vlm_layer` (GR00T's one layer) and the DiT
  blocks only read it (as GR00T's DiT does), so the context is the adapter output mixed block by
  block with the VLM's hidden states, not a stream the blocks transform.
* Left open by the paper, chosen here: flow matching (openpi time convention, as every expert here);
  no camera-pose position code; the image-coordinate embedding of the pi-style expert is left out
  (GR00T reads positions from the VLM features).

Caching: the context depends on neither the actions nor the flow time, so `encode_prefix` computes
every cross block's keys/values once per `sample_actions` call.
"""

from __future__ import annotations

from torch import Tensor, nn

from apt.models.expert_base import ExpertConfig
from apt.models.fusion import FusionConfig
from apt.models.groot_expert import DiTBlock, DiTTokens, groot_vlm_layer
from apt.models.highway import Highway, InterleavedExpert, highway_masks, interleave
from apt.models.layers import SelfAttentionBlock
from apt.models.vlm import VLMOutput

CrossKV = tuple[Tensor, Tensor, Tensor]  # keys, values [B, Hkv, T, dh], key mask [B, T]


class AptGrootExpert(DiTTokens, InterleavedExpert):
    """GR00T-style APT expert (highway). Call: forward(vlm_out, state [B,S], x_t [B,H,A], t [B]) -> [B,H,A]."""

    def __init__(self, cfg: ExpertConfig, *, vlm_hidden: int, vlm_layers: int, state_dim: int, action_dim: int,
                 chunk_len: int, fusion: FusionConfig, stage2: bool) -> None:
        super().__init__(cfg, vlm_layers=vlm_layers, state_dim=state_dim, action_dim=action_dim, chunk_len=chunk_len,
                         fusion=fusion, stage2=stage2)
        w = cfg.width
        cross = tuple(i % 2 == 0 for i in range(cfg.depth))  # GR00T's alternation, in the Stage-1 blocks
        if stage2:
            cross = interleave((True,) * cfg.depth, cross)  # every new block cross-attends
        self.vlm_layer = groot_vlm_layer(cfg, vlm_layers)
        self.adapter_in = nn.Sequential(nn.LayerNorm(vlm_hidden), nn.Linear(vlm_hidden, w))
        self.adapter = nn.ModuleList(SelfAttentionBlock(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.adapter_layers))
        self.init_tokens(state_dim, action_dim, chunk_len)
        self.blocks = nn.ModuleList(DiTBlock(w, cfg.heads, cfg.mlp_ratio, cross=c) for c in cross)
        self.highway = Highway(vlm_hidden, w, len(cross), fusion)
        self.init_readout(action_dim)

    def encode_prefix(self, vlm: VLMOutput, key_mask: Tensor | None = None) -> list[CrossKV | None]:
        """Per block: the cross block's (k, v, key mask) over the context, None for a self block
        (key_mask is ignored: which blocks are language-isolated is the layout's)."""
        ctx = self.adapter_in(vlm.hidden_states[self.vlm_layer].to(self.adapter_in[1].weight.dtype))
        adapter_mask = highway_masks(vlm.image_mask, vlm.pad_mask, 0)[True][0]
        for blk in self.adapter:
            ctx = blk(ctx, adapter_mask)
        keys = {False: vlm.pad_mask, True: vlm.image_mask & vlm.pad_mask}
        kv: list[CrossKV | None] = []
        for j, (blk, isolated) in enumerate(zip(self.blocks, self.isolated)):
            kv.append((*blk.attn.project_kv(ctx), keys[isolated]) if blk.cross else None)
            if j < len(self.blocks) - 1:  # the last mix would reach no block
                ctx = self.highway.mix(j, ctx, vlm.hidden_states[self.layer_map[j]])
        return kv

    def velocity(self, prefix: list[CrossKV | None], state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        self.check_inputs(state, x_t, t)
        x, temb = self.embed_tokens(state, x_t, t)
        for blk, ctx_kv in zip(self.blocks, prefix):
            x = blk(x, temb, ctx_kv)
        return self.read_out(x, temb, x_t)
