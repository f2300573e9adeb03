r1reward serve --model runs/pipeline/rl/checkpoints/step_8/hf --k 5 --swap --max-batch 1024  # on :8000
# OpenRLHF: the label column is the reference response, or JSON {"question", "images", "reference"}
python -m openrlhf.cli.train_ppo_ray ... --remote_rm_url http://127.0.0.1:8000/get_reward --label_key label
