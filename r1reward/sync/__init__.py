"""Weight sync: the learners' trainable weights into the rollout workers' vLLM engines after each step.

`backend` picks the engine (the same answer on both sides), `transfer` is the trainer side (which
parameters, which workers), `buckets` packs, checksums and stages the bytes, `gloo_engine` is the CPU
engine and `vllm_plugin` registers it with vLLM. What each backend guarantees:

- gloo (`r1reward_gloo`, the CPU build): every bucket carries an XXH3-128 checksum of its bytes. Each
  worker receives the whole update, compares every checksum with the sender's, and only then loads
  it; a bucket that differs, or a transfer that times out, is refused with one line before any of it
  reaches the model, and the worker keeps its previous weights. The rendezvous and every broadcast
  are bounded by timeouts.weight_sync_s on both sides. The cost: the worker holds one extra copy of
  the weights sent while an update is staged.
- NCCL (vLLM's `nccl` engine, on a GPU): vLLM's own code, without checksums; tensors are loaded as
  they arrive. The project bounds each call on the workers (`RayRolloutClient`) and the learners' whole
  push (`LearnerGroup.push_weights`) by timeouts.weight_sync_s (plus a margin), so a stalled sync ends
  the run with one line; the NCCL collectives themselves have no deadline of the project's, and an
  update that fails mid-way leaves that worker's weights partly updated (the run stops; a restart
  starts fresh engines).
"""
