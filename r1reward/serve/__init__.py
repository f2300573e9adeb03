"""``r1reward serve``: a trained reward model behind HTTP (FastAPI + uvicorn).

- ``schemas``: request bodies and the one-line errors every bad request gets;
- ``batcher``: requests from concurrent clients merged into one engine call (max batch, short wait, timeout);
- ``service``: compare / rank / get_reward on a RewardModel (the Python API's engine and logic);
- ``openrlhf``: the OpenRLHF ``--remote_rm_url`` protocol (``POST /get_reward``) mapped onto pairs;
- ``metrics``: Prometheus counters and histograms; ``app``: the routes; ``cli``: the subcommand;
- ``from_flags``: the service and app of the subcommand's flags; ``ray_serve``: that app as a Ray Serve
  deployment (``--ray-serve``), one engine per replica.
"""
