"""Discrete-action VLA (pi0-FAST style) and its knowledge-insulation variant (pi0.5 + KI style).

`DiscreteVLA` = a VLM + an autoregressive token decoder. The decoder's layers read the VLM's
per-layer hidden states exactly as the pi-style expert does (layer i attends over [its own projection
of VLM layer `layer_map[i]`'s tokens; its own causal tokens]), so it works behind the `VLM` interface
for every backbone (TinyVLM's trunk is a bidirectional encoder without an LM head; `HFVLM` keeps only
the base model). Gradients of the token loss flow through those projections into the VLM's trainable
part, which trains (`train_vlm`): the VLM + decoder together are the next-token model.

Decoder sequence (one joint vocabulary, see `Vocab`):
    action example:  [state] [BOS_ACTION] a_1 ... a_n   -> targets a_1 ... a_n EOS
    VL example:      (no state) [BOS_TEXT] w_1 ... w_m  -> targets w_1 ... w_m EOS
`a_i` are FAST tokens of the normalised action chunk (`apt.models.action_tokens`); `w_i` are answer
tokens of a vision-language example (scene description / question answer), i.e. VLM-tokenizer ids from
the model's `text_vocab`. The VLM's language input is the instruction (action examples) or the question
(VL examples). Loss: mean next-token cross-entropy over every target token of the mixed batch
(co-training; the mix ratio is how many VL examples a batch carries).

Inference: greedy decoding with a KV cache (VLM prefix K/V projected once; the decoder's own K/V are
appended per step), restricted to action tokens and EOS. A generated sequence that does not decode to
a [H, A] chunk yields a NaN chunk for that sample: `LearnedPolicy` replaces non-finite chunks by its
documented fallback (zero action) and counts them (`invalid_chunks`). With relaxed decoding (a
checkpoint's `"inference": {"relaxed_decoding": true}`, the default of new discrete checkpoints, as
in LeRobot's and openpi's FAST decoders) a sequence with the wrong number of DCT coefficients is cut
or zero-padded at the high-frequency end instead, and counted in `relaxed_chunks`.

Knowledge insulation (`ki=True`, policy `ki_pi0`): a continuous pi-style expert (`PiExpert`, full
attention to the VLM features) reads the VLM output through a stop-gradient and trains by flow
matching, while the VLM trains only on the discrete (+ VL) loss. At inference the expert acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt.models.action_tokens import ActionTokenizer, InvalidActionTokens
from apt.models.expert_base import ExpertConfig, attention_geometry
from apt.models.flow import FlowConfig
from apt.models.layers import RMSNorm, compact_tokens, masked_attention, merge_heads, split_heads
from apt.models.pi_expert import PiExpert, PiLayer, make_attn_mask
from apt.models.backbones import build_vlm
from apt.models.policy_model import JsonConfig, VLMBacked
from apt.models.vlm import VLM, VLMConfig, VLMOutput


# --------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DiscreteConfig(JsonConfig):
    """Everything needed to rebuild a discrete VLA; stored as JSON in a checkpoint's config.json."""

    vlm: VLMConfig = field(default_factory=VLMConfig)
    decoder: ExpertConfig = field(default_factory=ExpertConfig)  # sizes of the token decoder (pi-layer wiring)
    chunk_len: int = 8
    action_dim: int = 7
    state_dim: int = 8
    action_vocab: int = 1024  # BPE vocabulary size of the FAST tokenizer (incl. its 256 byte symbols)
    max_action_tokens: int = 64  # longest generated action sequence (EOS excluded)
    text_vocab: tuple[int, ...] = ()  # VLM-tokenizer ids the decoder can emit for VL answers
    max_answer_tokens: int = 16  # longest VL answer (EOS excluded)
    train_vlm: bool = True  # the VLM's trainable part trains on the token loss (pi0-FAST: yes)
    tokenizer: dict[str, Any] | None = None  # fitted ActionTokenizer.to_dict() (None: not fitted yet)
    ki: bool = False  # knowledge insulation: add a continuous expert behind a stop-gradient
    expert: ExpertConfig = field(default_factory=ExpertConfig)  # ki only
    flow: FlowConfig = field(default_factory=FlowConfig)  # ki only



@dataclass(frozen=True)
class Vocab:
    """The decoder's joint vocabulary: [PAD, BOS_ACTION, BOS_TEXT, EOS | action tokens | text tokens]."""

    action: int
    text: tuple[int, ...]
    PAD: int = 0
    BOS_ACTION: int = 1
    BOS_TEXT: int = 2
    EOS: int = 3
    SPECIAL: int = 4

    @property
    def size(self) -> int:
        return self.SPECIAL + self.action + len(self.text)

    @property
    def action_offset(self) -> int:
        return self.SPECIAL

    @property
    def text_offset(self) -> int:
        return self.SPECIAL + self.action

    def text_ids(self, vlm_ids: list[int]) -> list[int]:
        """VLM-tokenizer ids -> joint ids; ids outside `text_vocab` are an error (fix the vocabulary)."""
        index = {t: i for i, t in enumerate(self.text)}
        missing = [t for t in vlm_ids if t not in index]
        if missing:
            raise ValueError(f"answer token ids {missing[:5]} are not in the model's text_vocab")
        return [self.text_offset + index[t] for t in vlm_ids]


# -------------------------------------------------------------------------------------- decoder
class DecoderLayer(PiLayer):
    """A pi-style joint-attention layer used causally, with an explicit K/V cache of its own tokens."""

    def extend(self, x: Tensor, pk: Tensor, pv: Tensor, mask: Tensor,
               cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x [B, N, W] new tokens; pk/pv [B, Hkv, P, dh] prefix; cache: own (k, v) [B, Hkv, C, dh] of the
        C earlier tokens; mask [B, N, P + C + N]. Returns (x', cache extended by the N new tokens)."""
        h = self.norm(x)
        q = split_heads(self.q(h), self.heads)
        k_new, v_new = split_heads(self.k(h), self.kv_heads), split_heads(self.v(h), self.kv_heads)
        if cache is not None:
            k_new, v_new = torch.cat([cache[0], k_new], dim=2), torch.cat([cache[1], v_new], dim=2)
        k, v = torch.cat([pk, k_new], dim=2), torch.cat([pv, v_new], dim=2)
        x = x + self.o(merge_heads(masked_attention(q, k, v, mask)))
        return x + self.mlp(self.mlp_norm(x)), (k_new, v_new)


@dataclass
class DecoderState:
    """Per-sample decoding state: prefix K/V per layer, their mask, own-token caches and validity."""

    prefix_kv: list[tuple[Tensor, Tensor]]
    prefix_mask: Tensor  # [B, P] bool
    cache: list[tuple[Tensor, Tensor]] | None = None
    valid: Tensor | None = None  # [B, C] bool: which cached own tokens are real (VL: no state token)


class TokenDecoder(nn.Module):
    """Causal transformer over [state; BOS; tokens] whose layer i also attends to VLM layer map[i]."""

    def __init__(self, cfg: ExpertConfig, *, vlm_hidden: int, vlm_layers: int, vocab: int, state_dim: int,
                 max_len: int) -> None:
        super().__init__()
        w = cfg.width
        self.head_dim, self.kv_heads, self.layer_map = attention_geometry(cfg, vlm_layers, "decoder")
        self.embed = nn.Embedding(vocab, w)
        self.state_in = nn.Linear(state_dim, w)
        self.pos = nn.Parameter(torch.randn(max_len, w) * 0.02)  # positions of [state, BOS, t_1, ...]
        self.layers = nn.ModuleList(
            DecoderLayer(w, vlm_hidden, cfg.heads, self.kv_heads, self.head_dim, int(w * cfg.mlp_ratio))
            for _ in range(cfg.depth))
        self.final_norm = RMSNorm(w)
        self.head = nn.Linear(w, vocab, bias=False)
        self.max_len = max_len

    def start(self, vlm: VLMOutput) -> DecoderState:
        """Project the VLM prefix (every valid token: images and language) once per layer."""
        kv, mask = [], None
        for layer, idx in zip(self.layers, self.layer_map):
            feats, mask = compact_tokens(vlm.hidden_states[idx], vlm.pad_mask)
            kv.append(layer.project_prefix(feats))
        assert mask is not None
        return DecoderState(kv, mask)

    def extend(self, st: DecoderState, x: Tensor, new_valid: Tensor) -> Tensor:
        """Feed N new input embeddings x [B, N, W] (valid [B, N]); returns hidden states [B, N, W].

        Mask over [prefix P | cached C | new N] (`make_attn_mask`, rows of the new tokens):
          prefix: one block, every new token sees all valid prefix tokens;
          own tokens: one block each (causal), cached ones all visible.
        """
        b, n, _ = x.shape
        c = 0 if st.valid is None else st.valid.shape[1]
        assert c + n <= self.max_len, (c, n, self.max_len)
        x = x + self.pos[c:c + n]
        p = st.prefix_mask.shape[1]
        own_valid = new_valid if st.valid is None else torch.cat([st.valid, new_valid], dim=1)
        pad = torch.cat([st.prefix_mask, own_valid], dim=1)
        starts = torch.zeros_like(pad)
        starts[:, p:] = True
        mask = make_attn_mask(pad, starts)[:, p + c:]  # [B, N, P + C + N]
        caches = []
        for i, layer in enumerate(self.layers):
            x, kv = layer.extend(x, *st.prefix_kv[i], mask, None if st.cache is None else st.cache[i])
            caches.append(kv)
        st.cache, st.valid = caches, own_valid
        return self.final_norm(x)

    def logits(self, h: Tensor) -> Tensor:
        return self.head(h).float()


def detach_output(out: VLMOutput) -> VLMOutput:
    """The stop-gradient of knowledge insulation: same features, no gradient back into the VLM."""
    return VLMOutput(tuple(h.detach() for h in out.hidden_states), out.image_mask, out.lang_mask, out.pad_mask)


def trim_padding(targets: Tensor, pad: int = Vocab.PAD) -> Tensor:
    """Drop the trailing all-PAD columns of a batch of targets [B, L] (keeping at least one).

    Targets are padded to the longest possible sequence (`max_action_tokens + 1`), several times a
    typical chunk's length; the decoder is causal and PAD targets carry no loss, so cutting the
    columns no sample uses changes no logit or loss and saves most of the decoder's compute."""
    used = (targets != pad).any(dim=0).nonzero()
    return targets[:, : int(used.max()) + 1 if len(used) else 1]


# ---------------------------------------------------------------------------------------- model
class DiscreteVLA(VLMBacked):
    """VLM + FAST-token decoder (+ KI expert). `loss(batch)` trains, `sample_actions(batch)` acts.

    Batch schema: as `VLAModel`'s ("images" or cached "image_features"/"text_features", "input_ids",
    "attention_mask", "state" [B, S] normalised) plus, for the loss, "action_tokens" [B, L] joint ids
    (`action_targets`; computed from "actions" [B, H, A] when absent) and optionally a VL part with
    the same keys prefixed "vl_" ("vl_image_features"/"vl_text_features" or "vl_images",
    "vl_input_ids", "vl_attention_mask" for the question, "vl_targets" [B_vl, M] joint ids).
    """

    def __init__(self, cfg: DiscreteConfig, vlm: VLM | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab = Vocab(cfg.action_vocab, tuple(cfg.text_vocab))
        self.action_tokenizer = ActionTokenizer.from_dict(cfg.tokenizer) if cfg.tokenizer is not None else None
        if self.action_tokenizer is not None:
            tk = self.action_tokenizer
            assert (tk.chunk_len, tk.action_dim) == (cfg.chunk_len, cfg.action_dim), (tk.chunk_len, tk.action_dim)
            assert tk.vocab_size <= cfg.action_vocab, (tk.vocab_size, cfg.action_vocab)
        self.vlm: VLM = vlm if vlm is not None else build_vlm(cfg.vlm)
        self.decoder = TokenDecoder(cfg.decoder, vlm_hidden=self.vlm.hidden_size, vlm_layers=self.vlm.num_layers,
                                    vocab=self.vocab.size, state_dim=cfg.state_dim,
                                    max_len=2 + max(cfg.max_action_tokens, cfg.max_answer_tokens))
        self.expert: PiExpert | None = None
        if cfg.ki:
            self.expert = PiExpert(cfg.expert, vlm_hidden=self.vlm.hidden_size, vlm_layers=self.vlm.num_layers,
                                   state_dim=cfg.state_dim, action_dim=cfg.action_dim, chunk_len=cfg.chunk_len)
        self.vlm_trains = cfg.train_vlm
        self.vlm.set_trainable(cfg.train_vlm)
        # Inference setting (a checkpoint's config.json "inference", set by the policy loader):
        # strict by default, so a bare model reports every malformed generation.
        self.relaxed_decoding = False
        self.relaxed_chunks = 0  # chunks decoded only by cutting / zero-padding coefficients

    # -- helpers

    def _tokenizer(self) -> ActionTokenizer:
        if self.action_tokenizer is None:
            raise RuntimeError("this DiscreteVLA has no fitted action tokenizer (DiscreteConfig.tokenizer)")
        return self.action_tokenizer

    def action_targets(self, chunks: np.ndarray | Tensor) -> Tensor:
        """Normalised chunks [N, H, A] -> long [N, max_action_tokens + 1]: joint ids, EOS, then PAD."""
        arr = chunks.detach().cpu().numpy() if torch.is_tensor(chunks) else np.asarray(chunks)
        seqs = self._tokenizer().encode_batch(arr)
        longest = max((len(s) for s in seqs), default=0)
        if longest > self.cfg.max_action_tokens:
            raise ValueError(f"a chunk encodes to {longest} tokens > max_action_tokens "
                             f"{self.cfg.max_action_tokens}; raise it in the config")
        out = torch.full((len(seqs), self.cfg.max_action_tokens + 1), self.vocab.PAD, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long) + self.vocab.action_offset
            out[i, len(s)] = self.vocab.EOS
        return out

    def text_targets(self, answers: list[str]) -> Tensor:
        """VL answers -> long [N, max_answer_tokens + 1] joint ids, EOS, PAD (truncated to fit)."""
        tok = self.vlm.tokenizer
        out = torch.full((len(answers), self.cfg.max_answer_tokens + 1), self.vocab.PAD, dtype=torch.long)
        for i, a in enumerate(answers):
            ids = self.vocab.text_ids(tok(a, add_special_tokens=False)["input_ids"][: self.cfg.max_answer_tokens])
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            out[i, len(ids)] = self.vocab.EOS
        return out

    def _teacher_forced_ce(self, vlm_out: VLMOutput, bos: int, targets: Tensor,
                           state: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sum of token cross-entropies and the number of target tokens (PAD targets ignored)."""
        b = targets.shape[0]
        dev = targets.device
        st = self.decoder.start(vlm_out)
        emb = self.decoder.embed
        tokens = torch.cat([torch.full((b, 1), bos, dtype=torch.long, device=dev), targets[:, :-1]], dim=1)
        x = emb(tokens)
        valid = torch.ones(b, tokens.shape[1], dtype=torch.bool, device=dev)
        if state is not None:
            s = self.decoder.state_in(state.to(x.dtype))[:, None]
        else:  # no state: a masked placeholder keeps positions aligned with action examples
            s = torch.zeros_like(x[:, :1])
        x = torch.cat([s, x], dim=1)
        valid = torch.cat([torch.full((b, 1), state is not None, dtype=torch.bool, device=dev), valid], dim=1)
        h = self.decoder.extend(st, x, valid)[:, 1:]  # outputs at BOS, t_1, ... predict t_1, ..., EOS
        logits = self.decoder.logits(h)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             ignore_index=self.vocab.PAD, reduction="sum")
        return ce, (targets != self.vocab.PAD).sum()

    def _check(self, batch: dict[str, Tensor]) -> int:
        vision = {"image_features", "text_features"} if "image_features" in batch else {"images"}
        missing = (vision | {"input_ids", "attention_mask", "state"}) - set(batch)
        if missing:
            raise KeyError(f"batch lacks {sorted(missing)}")
        b = batch["state"].shape[0]
        assert batch["state"].shape == (b, self.cfg.state_dim), batch["state"].shape
        return b

    # -- training
    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Token cross-entropy (actions + VL, token-averaged) [+ flow-matching MSE of the KI expert]."""
        self._check(batch)
        targets = batch.get("action_tokens")
        if targets is None:
            targets = self.action_targets(batch["actions"]).to(batch["state"].device)
        vlm_out = self.encode(batch)
        ce, n = self._teacher_forced_ce(vlm_out, self.vocab.BOS_ACTION, targets, batch["state"])
        if "vl_targets" in batch:
            vl_out = self.encode(batch, prefix="vl_")
            ce_vl, n_vl = self._teacher_forced_ce(vl_out, self.vocab.BOS_TEXT, batch["vl_targets"], None)
            ce, n = ce + ce_vl, n + n_vl
        loss = ce / n.clamp_min(1)
        if self.expert is not None:
            prefix = self.expert.encode_prefix(detach_output(vlm_out))
            loss = loss + self.expert.flow_loss(prefix, batch["state"], batch["actions"], self.cfg.flow, generator)
        return loss

    # -- inference
    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], max_tokens: int | None = None) -> list[list[int]]:
        """Greedy decoding with a KV cache; returns per sample the action-token ids (BPE ids, no EOS).

        Only action tokens and EOS can be generated. A sample that emits no EOS within `max_tokens`
        returns its (truncated) sequence, which usually fails to decode.
        """
        b = self._check(batch)
        vlm_out = self.encode(batch)
        st = self.decoder.start(vlm_out)
        dev = batch["state"].device
        s = self.decoder.state_in(batch["state"].to(self.decoder.pos.dtype))[:, None]
        bos = self.decoder.embed(torch.full((b, 1), self.vocab.BOS_ACTION, dtype=torch.long, device=dev))
        h = self.decoder.extend(st, torch.cat([s, bos], dim=1), torch.ones(b, 2, dtype=torch.bool, device=dev))[:, -1]
        allowed = torch.zeros(self.vocab.size, dtype=torch.bool, device=dev)
        allowed[self.vocab.action_offset:self.vocab.action_offset + self._tokenizer().vocab_size] = True
        allowed[self.vocab.EOS] = True
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        out: list[Tensor] = []
        for _ in range(max_tokens or self.cfg.max_action_tokens):
            logits = self.decoder.logits(h).masked_fill(~allowed, float("-inf"))
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.vocab.EOS), nxt)
            out.append(nxt)
            done |= nxt == self.vocab.EOS
            if bool(done.all()):
                break
            h = self.decoder.extend(st, self.decoder.embed(nxt)[:, None],
                                    torch.ones(b, 1, dtype=torch.bool, device=dev))[:, -1]
        seqs = torch.stack(out, dim=1).tolist() if out else [[] for _ in range(b)]
        result = []
        for row in seqs:
            ids = row[: row.index(self.vocab.EOS)] if self.vocab.EOS in row else row
            result.append([i - self.vocab.action_offset for i in ids])
        return result

    def decode_tokens(self, seqs: list[list[int]]) -> Tensor:
        """Action-token sequences -> normalised chunks float32 [B, H, A]; undecodable ones are NaN.
        With `relaxed_decoding`, a sequence with the wrong number of coefficients is cut / zero-padded
        (counted in `relaxed_chunks`) instead of being undecodable."""
        tk = self._tokenizer()
        out = np.full((len(seqs), self.cfg.chunk_len, self.cfg.action_dim), np.nan, np.float32)
        for i, ids in enumerate(seqs):
            try:
                out[i] = tk.decode(ids)
            except InvalidActionTokens:
                if self.relaxed_decoding:
                    try:
                        out[i] = tk.decode(ids, relaxed=True)
                        self.relaxed_chunks += 1
                    except InvalidActionTokens:
                        pass
                # else (or still undecodable): NaN marks it; the policy substitutes its fallback
        return torch.from_numpy(out)

    @torch.no_grad()
    def sample_actions(self, batch: dict[str, Tensor], generator: torch.Generator | None = None,
                       num_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """Normalised chunks [B, H, A]: the KI expert's flow sample (from `noise` when given), else
        greedy FAST decoding (NaN rows where the generated tokens do not decode)."""
        self._check(batch)
        if self.expert is not None:
            prefix = self.expert.encode_prefix(self.encode(batch))
            return self.expert.sample(prefix, batch["state"], self.cfg.flow, generator, num_steps, noise)
        return self.decode_tokens(self.generate(batch)).to(batch["state"].device)

    def param_groups(self, lr: float, weight_decay: float = 0.0,
                     vlm_lr_multiplier: float = 1.0) -> list[dict[str, Any]]:
        """AdamW groups: the fresh decoder (and KI expert) at `lr`, the pretrained trainable trunk at
        `lr * vlm_lr_multiplier` (discriminative fine-tuning; 1 = pi0-FAST's single LR)."""
        heads = [p for n, p in self.named_parameters() if not n.startswith("vlm.") and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": heads, "lr": lr, "weight_decay": weight_decay, "name": "heads"}]
        vlm = [p for p in self.vlm.parameters() if p.requires_grad]
        if vlm:
            groups.append({"params": vlm, "lr": lr * vlm_lr_multiplier, "weight_decay": weight_decay, "name": "vlm"})
        return groups
