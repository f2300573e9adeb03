import requests  # verl: custom_reward_function.path=this file; extra_info holds question and images
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    out = requests.post("http://127.0.0.1:8000/v1/compare", timeout=600, json={
        "question": extra_info["question"], "images": extra_info["images"], "k": 5, "swap": True,
        "response_1": solution_str, "response_2": ground_truth}).json()
    votes = out["votes"] + out["votes_swapped"]
    return votes.count(1) / len(votes)  # the share of the 2K votes preferring the rollout to the reference
