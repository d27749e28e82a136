"""APT model code: VLM backbones, the pi-style and GR00T-style action experts, gated fusion and flow
matching. Import from the submodules (e.g. `from apt.models.policy_model import VLAModel`); this package
file stays empty so `import apt.models` never loads transformers."""
