"""`rlhf report <dir>`: the reward-KL frontier of a sweep (`frontier`), its figure (`plot`) and the
bootstrap intervals over prompts (`stats`)."""
