"""r1reward: train multimodal reward models with StableReinforce (R1-Reward, arXiv 2505.02835)."""

__version__ = "0.1.0"
