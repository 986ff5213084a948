"""GRPO as pure functions: group advantages, group filtering, policy-gradient losses and KL penalties."""
