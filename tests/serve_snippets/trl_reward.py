import json, requests  # TRL: GRPOTrainer(reward_funcs=r1reward); columns question, images (paths/base64), reference
def r1reward(completions, question, images, reference, **kwargs):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # plain or conversational
    query = [json.dumps({"question": q, "images": i, "response": t, "reference": r})
             for q, i, t, r in zip(question, images, texts, reference)]
    return requests.post("http://127.0.0.1:8000/get_reward", json={"query": query}, timeout=600).json()["rewards"]
