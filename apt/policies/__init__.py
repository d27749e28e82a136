"""Policies: the learned policy and its transforms, the reference policies (oracle, random) and the
openpi client; everything that turns observations into action chunks behind `benchmarks.base.Policy`."""
