"""Weight sync: the learners' trainable weights into the rollout workers' vLLM engines after each step.

`backend` picks the engine (the same answer on both sides), `transfer` is the trainer side (which
parameters, which workers), `buckets` packs, checksums and stages the bytes, `engine` is the one
protocol over a gloo (CPU) or NCCL (GPU) transport, and `vllm_plugin` registers it with vLLM. Both
backends (`r1reward_gloo`, `r1reward_nccl`) guarantee the same:

- every bucket carries an XXH3-64 checksum of its bytes. Each worker receives the whole update,
  compares every checksum with the sender's, and only then loads it; a bucket that differs, or a
  transfer that times out, is refused with one line before any of it reaches the model, and the
  worker keeps its previous weights. The cost: the worker keeps one extra copy of the weights sent,
  a staging area reused from update to update (on its GPU with NCCL), and the trainer's rank 0 keeps
  two bucket-sized pack buffers.
- the rendezvous and every broadcast are bounded by timeouts.weight_sync_s on both sides (gloo's own
  timeout; for NCCL, which has none, each broadcast's wait polls a CUDA event up to it).
- every learner rank walks the weight source in order, so each ZeRO-3 gather has all ranks in it.
"""
