import requests  # verl: custom_reward_function.path=this file; extra_info holds question and images
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    body = {"question": extra_info["question"], "images": extra_info["images"], "k": 5, "swap": True,
            "response_1": solution_str, "response_2": ground_truth}
    out = requests.post("http://127.0.0.1:8000/v1/compare", json=body, timeout=600).json()
    votes = out["votes"] + out["votes_swapped"]
    return sum(v == 1 for v in votes) / len(votes)  # share of votes for the rollout over the reference
